"""A multi-node Ray cluster simulated on this machine: each stage pinned to its own node by a
custom resource, with an s3:// store (moto's standalone server on 127.0.0.1) as the only thing
the nodes share."""

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from distillery.runtime import ensure_ray
from distillery.stages import Pipeline

from conftest import BUCKET, ROOT, s3_client, tiny_spec

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


def test_pipeline_with_stages_pinned_to_different_nodes(cluster, s3_env, tmp_path):
    cluster, node_ids = cluster
    s3_client(s3_env).create_bucket(Bucket=BUCKET)
    store = f"s3://{BUCKET}/multinode"
    spec = tiny_spec(tmp_path / "unused", f"store={store}",
                     "teacher.train.resources={teacher_node: 1}",
                     "teacher.inference.resources={infer_node: 1}",
                     "distill.resources={distill_node: 1}")
    ensure_ray(cluster.address)
    pipeline = Pipeline(spec)
    pipeline.train_teacher()
    pipeline.teacher_infer()
    student = pipeline.distill()
    assert not (tmp_path / "unused").exists()  # nothing went to a local store

    nodes: dict[str, set] = {}
    for actor in list_actors(limit=10_000, detail=True):
        if actor.node_id:  # pool actors that were requested but never placed have none
            nodes.setdefault(actor.class_name, set()).add(actor.node_id)
    map_workers = {n for cls, ids in nodes.items() if "MapWorker" in cls for n in ids}
    assert map_workers == {node_ids["infer_node"]}
    assert nodes["RayTrainWorker"] == {node_ids["teacher_node"], node_ids["distill_node"]}
    check_s3_layout(s3_client(s3_env), "multinode", student["run_id"], tmp_path)


def check_s3_layout(s3, prefix: str, student_run: str, tmp_path) -> None:
    """DESIGN.md's layout: teachers/<name>/<fp>/, cache/<teacher_fp>-<data_fp>/,
    students/<run>/, each committed by its marker, and no local path in what was written."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{prefix}/") for o in page.get("Contents", [])]
    cards = [k for k in keys if k.endswith("card.json")]
    teacher_cards = [k for k in cards if k.startswith(f"{prefix}/teachers/cnn-teacher/")]
    assert len(teacher_cards) == 1
    teacher_fp = teacher_cards[0].split("/")[3]
    assert f"{prefix}/students/{student_run}/card.json" in cards
    assert f"{prefix}/students/{student_run}/model.ts" in keys
    assert any(k.startswith(f"{prefix}/students/{student_run}/checkpoints/epoch-0002/")
               for k in keys)
    manifests = [k for k in keys
                 if k.startswith(f"{prefix}/cache/") and k.endswith("manifest.json")]
    assert len(manifests) == 1 and manifests[0].split("/")[2].startswith(f"{teacher_fp}-")
    assert any(k.startswith(f"{prefix}/cache/") and k.endswith(".parquet") for k in keys)
    for key in cards + manifests:
        text = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        assert str(tmp_path) not in text and str(ROOT) not in text, key
