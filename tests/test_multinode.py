"""`ray job submit` of the quickstart, from a clean clone, to a multi-node Ray cluster simulated
on this machine: each stage pinned to its own node by a custom resource, with an s3:// store
(moto's standalone server on 127.0.0.1) as the only thing the nodes share. Then the jobs of the
commands the quickstart does not run (monitor charts, baseline, compare-strategies), on the
store it filled.

One cluster checks both what a user reads (the jobs' output and summary) and where the work ran
and what it wrote: a second cluster for any of it costs ~90 s of a 2-core CI run.
The README's `ray start --head` and `ray stop` are not run by any test: `ray stop` stops every
Ray process on the machine, the suite's own included; ray.cluster_utils starts the same
processes (GCS, raylets, dashboard) and stops only its own.
"""

import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from helpers import BUCKET, ROOT, free_port, s3_client, tiny_overrides

NODES = ("infer_node", "teacher_node", "distill_node")  # the first is the head
PREFIX = "multinode"


@pytest.fixture
def cluster(s3_env, monkeypatch, no_local_ray):
    """Three 2-CPU nodes, one per stage (the head runs teacher inference: a fourth node would
    cost ~10 s of start-up and a CPU share here); token auth off, as the README says.
    (ray.cluster_utils, not `ray start`: its shutdown stops only this cluster's processes,
    where `ray stop` stops every Ray process on the machine.)"""
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, s3_env[key])  # nodes started below, and the job, inherit it
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # the job's `python` is this venv's, as for a user with the venv activated
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {NODES[0]: 4}, "include_dashboard": True,
        "dashboard_port": free_port()})
    node_ids = {NODES[0]: cluster.head_node.node_id}
    for name in NODES[1:]:
        # a runtime-env folder per node, as on separate machines: in a shared one each node
        # unpacks the job's working dir afresh, deleting it under the running driver
        node = cluster.add_node(num_cpus=2, resources={name: 4},
                                runtime_env_dir_name=f"runtime_resources_{name}")
        node_ids[name] = node.node_id
    cluster.wait_for_nodes()
    try:
        yield f"http://{cluster.webui_url}", node_ids
    finally:
        cluster.shutdown()


def test_jobs_from_a_clean_clone_with_stages_pinned_to_different_nodes(
        cluster, s3_env, tmp_path):
    """The quickstart (every stage) as a user submits it, checked as they would read its
    output; then where each stage ran, and the store's layout on S3; then the other jobs."""
    address, node_ids = cluster
    s3 = s3_client(s3_env)
    s3.create_bucket(Bucket=BUCKET)
    clone, out = tmp_path / "clone", tmp_path / "out"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    overrides = tiny_overrides(tmp_path / "unused", f"store=s3://{BUCKET}/{PREFIX}",
                               "teacher.train.resources={teacher_node: 1}",
                               "teacher.inference.resources={infer_node: 1}",
                               "distill.resources={distill_node: 1}",
                               # one Ray Train worker a fit: three nodes share 2 cores here
                               "teacher.train.num_workers=1", "distill.num_workers=1",
                               # nothing below reads the robustness suite: one shifted set
                               "evaluate.shifts=[{kind: iid_noise, severities: [0.1]}]")
    output = submit(address, clone, "quickstart", overrides, "--output-dir", str(out))
    assert "student" in output and "x smaller" in output  # the side-by-side table
    assert not (tmp_path / "unused").exists()  # nothing went to a local store

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"data", "train-teacher", "teacher-infer", "distill",
                                      "baseline", "evaluate"}
    assert set(summary["teacher"]) >= {"params", "accuracy"}
    assert set(summary["student"]) >= {"params", "accuracy", "agreement"}
    assert summary["student"]["params"] == summary["baseline"]["params"]
    assert summary["student"]["params"] < summary["teacher"]["params"]
    for role in ("teacher", "student", "baseline"):
        assert 0.0 <= summary[role]["accuracy"] <= 1.0

    # the job ran the clone's code and committed a student to the store
    run = f"{PREFIX}/students/{summary['student']['run_id']}"
    card = json.loads(read(s3, f"{run}/card.json"))
    assert card["role"] == "student" and card["teacher_fingerprint"]
    assert card["metrics"]["test_accuracy"] == summary["student"]["accuracy"]
    assert card["spec"]["distill"]["temperature"] == 4.0
    scripted = torch.jit.load(io.BytesIO(read(s3, f"{run}/model.ts")))
    assert scripted(torch.randn(2, 40)).shape == (2, 10)

    # each stage ran on its node: inference actors (teacher-infer's and evaluate's, which
    # uses the teacher's inference settings) on one, teacher and student training on two
    nodes: dict[str, set] = {}
    for actor in list_actors(address=address, limit=10_000, detail=True):
        if actor.node_id:  # pool actors that were requested but never placed have none
            nodes.setdefault(actor.class_name, set()).add(actor.node_id)
    map_workers = {n for cls, ids in nodes.items() if "MapWorker" in cls for n in ids}
    assert map_workers == {node_ids["infer_node"]}
    assert nodes["RayTrainWorker"] == {node_ids["teacher_node"], node_ids["distill_node"]}
    check_s3_layout(s3, summary["student"]["run_id"], tmp_path)

    # at once: each job's driver start-up and Ray Train's waits overlap the others' work
    with ThreadPoolExecutor() as pool:
        checks = [pool.submit(check_monitor_charts_job, address, clone, overrides, s3),
                  pool.submit(check_baseline_job, address, clone, overrides, s3),
                  pool.submit(check_compare_strategies_job, address, clone, overrides, s3,
                              tmp_path)]
    for check in checks:
        check.result()


def submit(address: str, clone: Path, job: str, overrides: list[str], *args: str) -> str:
    """`ray job submit` of jobs/<job>.py on the reference spec with `overrides`, as the README
    shows it; the job's output, once it succeeded."""
    sets = [a for item in overrides for a in ("--set", item)]
    result = subprocess.run(
        ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", f"jobs/{job}.py", "--config", "jobs/configs/mnist1d.yaml", *sets, *args],
        cwd=clone, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "succeeded" in output
    return output


def read(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def check_s3_layout(s3, student_run: str, tmp_path) -> None:
    """DESIGN.md's layout: teachers/<name>/<fp>/, cache/<teacher_fp>-<data_fp>/,
    students/<run>/, each committed by its marker, and no local path in what was written."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{PREFIX}/") for o in page.get("Contents", [])]
    cards = [k for k in keys if k.endswith("card.json")]
    teacher_cards = [k for k in cards if k.startswith(f"{PREFIX}/teachers/cnn-teacher/")]
    assert len(teacher_cards) == 1
    teacher_fp = teacher_cards[0].split("/")[3]
    run = f"{PREFIX}/students/{student_run}"
    assert f"{run}/card.json" in cards
    assert f"{run}/model.ts" in keys
    # distill reported one metrics row and checkpoint per epoch to Ray Train
    assert {k.split("/")[4] for k in keys
            if k.startswith(f"{run}/checkpoints/epoch-")} == {"epoch-0001", "epoch-0002"}
    manifests = [k for k in keys
                 if k.startswith(f"{PREFIX}/cache/") and k.endswith("manifest.json")]
    assert len(manifests) == 1 and manifests[0].split("/")[2].startswith(f"{teacher_fp}-")
    assert any(k.startswith(f"{PREFIX}/cache/") and k.endswith(".parquet") for k in keys)
    for key in cards + manifests:
        text = read(s3, key).decode()
        assert str(tmp_path) not in text and str(ROOT) not in text, key


def check_monitor_charts_job(address: str, clone: Path, overrides: list[str], s3) -> None:
    """Charts of a request log written to S3 here: five 1-second buckets of 4 rows, more than
    the 2 reference buckets a chart needs."""
    from distillery.config import load_spec
    from distillery.monitoring.request_log import Entry, RequestLog
    from distillery.storage import Store

    spec = load_spec(ROOT / "jobs" / "configs" / "mnist1d.yaml", overrides)
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    rng = np.random.default_rng(0)
    RequestLog(Store(spec.store), spec.monitor.request_log).write([
        Entry(time=(start + timedelta(seconds=i + 0.5)).timestamp(), request_id=f"r{i}",
              endpoint="student", model="student", model_version="v", latency_ms=1.0,
              inputs=rng.normal(size=(4, 40)).astype(np.float32),
              probs=rng.dirichlet(np.ones(10), size=4).astype(np.float32))
        for i in range(5)])
    charts = ["monitor.control.bucket_seconds=1", "monitor.control.reference_buckets=2",
              "monitor.control.min_bucket_rows=1", "monitor.control.signals=[confidence]"]
    output = submit(address, clone, "monitor_charts", [*overrides, *charts],
                    "--from", start.isoformat(), "--to", (start + timedelta(seconds=5)).isoformat())
    status, _ = json.JSONDecoder().raw_decode(output, output.index("{\n"))
    assert status["rows"] == 20 and status["drift"] is None and status["alerts"] == []
    assert set(status["files"]) == {"control-confidence", "check"}
    for uri in status["files"].values():
        assert uri.startswith(f"s3://{BUCKET}/{PREFIX}/monitor/reports/{status['window']}/")
        assert read(s3, uri.removeprefix(f"s3://{BUCKET}/"))


def check_baseline_job(address: str, clone: Path, overrides: list[str], s3) -> None:
    output = submit(address, clone, "baseline", overrides)
    uri = re.search(r"^baseline: .* -> (\S+)$", output, re.MULTILINE).group(1)
    assert uri.startswith(f"s3://{BUCKET}/{PREFIX}/students/") and uri.endswith("-baseline")
    card = json.loads(read(s3, f"{uri.removeprefix(f's3://{BUCKET}/')}/card.json"))
    assert card["role"] == "baseline" and card["strategy"] == "supervised"


def check_compare_strategies_job(address: str, clone: Path, overrides: list[str], s3,
                                 tmp_path: Path) -> None:
    """One variant (the reference spec trained for one epoch: a cheap override to see applied)
    and the baseline, one seed: the table in the log, the result in --output."""
    variants, result = tmp_path / "variants.yaml", tmp_path / "strategies.json"
    variants.write_text("one_epoch: [distill.epochs=1]\n")
    output = submit(address, clone, "compare_strategies", overrides, "--variants",
                    str(variants), "--output", str(result))
    assert "| one_epoch |" in output and "| baseline |" in output
    assert f"results: {result}" in output
    runs = json.loads(result.read_text())["runs"]
    assert [r["variant"] for r in runs] == ["one_epoch", "baseline"]
    cards = [json.loads(read(s3, f"{PREFIX}/students/{run['run_id']}/card.json"))
             for run in runs]
    assert [c["spec"]["distill"]["epochs"] for c in cards] == [1, 2]
    assert [c["metrics"]["test_accuracy"] for c in cards] == [r["test_accuracy"] for r in runs]
