"""A multi-node Ray cluster simulated on this machine: each stage pinned to its own node by a
custom resource, with an s3:// store as the only thing the nodes share."""

import json

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from distillery.quickstart import quickstart
from distillery.runtime import ensure_ray
from distillery.stages import Pipeline

from conftest import BUCKET, s3_client, tiny_spec

pytestmark = pytest.mark.integration

NODES = ("teacher_node", "infer_node", "distill_node")


@pytest.fixture
def cluster(s3_env, monkeypatch, no_local_ray):
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, s3_env[key])  # nodes started below inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    node_ids = {}
    for name in NODES:
        node = cluster.add_node(num_cpus=2, resources={name: 4})
        node_ids[name] = node.node_id
    cluster.wait_for_nodes()
    try:
        yield cluster, node_ids
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_quickstart_with_stages_pinned_to_different_nodes(cluster, s3_env, tmp_path):
    cluster, node_ids = cluster
    s3_client(s3_env).create_bucket(Bucket=BUCKET)
    store = f"s3://{BUCKET}/multinode"
    spec = tiny_spec(tmp_path / "unused", f"store={store}",
                     "teacher.train.resources={teacher_node: 1}",
                     "teacher.inference.resources={infer_node: 1}",
                     "distill.resources={distill_node: 1}")
    ensure_ray(cluster.address)
    summary = quickstart(Pipeline(spec), str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert not (tmp_path / "unused").exists()  # nothing went to a local store

    nodes: dict[str, set] = {}
    for actor in list_actors(limit=10_000, detail=True):
        if actor.node_id:  # pool actors that were requested but never placed have none
            nodes.setdefault(actor.class_name, set()).add(actor.node_id)
    map_workers = {n for cls, ids in nodes.items() if "MapWorker" in cls for n in ids}
    assert map_workers == {node_ids["infer_node"]}
    assert nodes["RayTrainWorker"] == {node_ids["teacher_node"], node_ids["distill_node"]}
