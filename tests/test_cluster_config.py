"""cluster.yaml passes Ray's own cluster-config validation, offline, plus what Ray doesn't check."""

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from conftest import ROOT

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


def test_every_node_installs_this_repo_and_the_dashboard_is_exposed():
    assert CONFIG["file_mounts"]["/home/ubuntu/distillery"] == "."
    assert any("pip install" in c and "/home/ubuntu/distillery" in c
               for c in CONFIG["setup_commands"])
    head = " ".join(CONFIG["head_start_ray_commands"])
    assert "--dashboard-port=8265" in head and "--dashboard-host=0.0.0.0" in head
    assert ".venv" in CONFIG["rsync_exclude"]
