"""cluster.yaml passes Ray's own cluster-config validation, offline, plus what Ray doesn't check."""

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from helpers import ROOT

CONFIG = yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_with_rays_validator():
    validate_config(prepare_config(CONFIG))


def test_cluster_has_cpu_and_gpu_workers_with_autoscaling_bounds():
    types = CONFIG["available_node_types"]
    assert CONFIG["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != CONFIG["head_node_type"]}
    gpu = [t for t in workers.values() if t["node_config"]["InstanceType"].startswith("g5.")]
    cpu = [t for t in workers.values() if t["node_config"]["InstanceType"].startswith("m5.")]
    assert gpu and cpu
    for t in workers.values():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= CONFIG["max_workers"]


def test_every_node_installs_this_repo():
    assert CONFIG["file_mounts"]["/home/ubuntu/distillery"] == "."
    assert any("pip install" in c and "/home/ubuntu/distillery" in c
               for c in CONFIG["setup_commands"])
    assert ".venv" in CONFIG["rsync_exclude"]


def test_every_node_type_has_an_instance_profile_for_the_s3_store():
    """Ray's launcher gives the head a default profile (ray-autoscaler-v1) and the workers
    none: a worker without one cannot read or write an s3:// store."""
    profiles = {name: t["node_config"].get("IamInstanceProfile")
                for name, t in CONFIG["available_node_types"].items()}
    assert all(p and set(p) <= {"Name", "Arn"} for p in profiles.values()), profiles
    # the head's profile also starts EC2 instances; the workers' need only the store
    head = profiles.pop(CONFIG["head_node_type"])
    assert head not in profiles.values()


def test_the_dashboard_listens_on_the_heads_loopback_only():
    """It takes job submissions, i.e. runs any code: reached through `ray dashboard
    cluster.yaml` (an SSH tunnel), never on every interface."""
    head = " ".join(CONFIG["head_start_ray_commands"])
    assert "--dashboard-port=8265" in head
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_every_node_starts_ray_with_serves_fast_data_plane():
    """Serve reads its data plane when a node's Ray starts: the same on every node type."""
    from distillery.runtime import SERVE_DATAPLANE

    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in CONFIG[commands] if "ray start" in c)
        for name in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY"):
            assert f"{name}={SERVE_DATAPLANE[name]} " in start, (commands, name)
