"""`ray job submit` of the quickstart to a real `ray start --head` cluster, from a clean
clone."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, free_port, tiny_overrides

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path, no_local_ray):
    """A local Ray cluster as `ray start --head` makes one; token auth off, as the README says."""
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    port = free_port()
    ray = shutil.which("ray", path=env["PATH"])
    subprocess.run([ray, "start", "--head", "--num-cpus=2", "--disable-usage-stats",
                    f"--dashboard-port={port}", f"--port={free_port()}"],
                   env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_quickstart_job_from_a_clean_clone(cluster, store_copy, tmp_path):
    """`ray job submit` of the quickstart (every stage; the store already holds the teacher)
    from a plain clone, checked as a user would read its output."""
    address, env = cluster
    clone, out = tmp_path / "clone", tmp_path / "out"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    sets = [a for item in tiny_overrides(store_copy) for a in ("--set", item)]
    result = subprocess.run(
        ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", "jobs/quickstart.py", "--config", "jobs/configs/mnist1d.yaml", *sets,
         "--output-dir", str(out)],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "succeeded" in output
    assert "student" in output and "x smaller" in output  # the side-by-side table

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
    run = store_copy / "students" / summary["student"]["run_id"]
    card = json.loads((run / "card.json").read_text())
    assert card["role"] == "student" and card["teacher_fingerprint"]
    assert card["metrics"]["test_accuracy"] == summary["student"]["accuracy"]
    assert card["spec"]["distill"]["temperature"] == 4.0
    scripted = torch.jit.load(str(run / "model.ts"))
    assert scripted(torch.randn(2, 40)).shape == (2, 10)
    # distill reported one metrics row and checkpoint per epoch to Ray Train
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*")) == ["epoch-0001",
                                                                             "epoch-0002"]
