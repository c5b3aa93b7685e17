"""The `distillery` CLI as a user runs it: subprocesses, each with its own embedded local Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REFERENCE_SPEC, ROOT, cli, tiny_overrides

pytestmark = pytest.mark.integration


def sets(overrides):
    return [arg for item in overrides for arg in ("--set", item)]


def snapshot(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("override, field", [
    ("distill.temperature=-1", "distill.temperature"),
    ("distill.bogus=1", "distill.bogus"),
    ("teacher.model.arch=torchscript", "teacher.model.path"),
])
def test_bad_spec_exits_with_one_line_and_touches_nothing(store_copy, override, field):
    before = snapshot(store_copy)
    result = cli("distill", "--config", str(REFERENCE_SPEC),
                 *sets(tiny_overrides(store_copy, override)), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(store_copy) == before


def test_missing_data_file_is_named(store_copy):
    result = cli("teacher-infer", "--config", str(REFERENCE_SPEC), *sets(tiny_overrides(
        store_copy, "data={source: parquet, path: /no/such.parquet, features: [a], label: y}",
        "evaluate={}")),
        timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: data.path: file not found: /no/such.parquet"


def test_killed_distill_resumes_from_its_last_checkpoint(store_copy, tmp_path, no_local_ray):
    overrides = tiny_overrides(store_copy, "distill.epochs=5")
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        [sys.executable, "-m", "distillery.cli", "distill", "--config", str(REFERENCE_SPEC),
         *sets(overrides)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        start_new_session=True)
    students = store_copy / "students"
    deadline = time.monotonic() + 400
    try:
        # a third checkpoint being written means the first is registered with Ray Train
        while not list(students.glob("*/checkpoints/epoch-0003")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no third checkpoint in time"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its embedded Ray, mid-run
        first.wait()
    (run,) = [p for p in students.iterdir()]
    assert not (run / "card.json").exists()

    result = cli("distill", "--resume", "--config", str(REFERENCE_SPEC), *sets(overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"resuming run {run.name}" in output
    resumed_at = int(output.split("resumed from epoch ")[1].split()[0])
    assert resumed_at >= 1
    # epochs up to the checkpoint are not trained again, and training goes on from its weights
    assert "[student] epoch 1/5" not in output
    assert "[student] epoch 5/5" in output
    first_loss = epoch_loss((tmp_path / "first.log").read_text(), 1)
    assert epoch_loss(output, resumed_at + 1) < first_loss
    card = json.loads((run / "card.json").read_text())
    assert card["run_id"] == run.name


def epoch_loss(log: str, epoch: int) -> float:
    line = next(li for li in log.splitlines() if f"[student] epoch {epoch}/5 " in li)
    return float(line.split(" loss=")[1].split()[0])


def test_resume_without_an_unfinished_run_says_so(store_copy):
    result = cli("distill", "--resume", "--config", str(REFERENCE_SPEC),
                 *sets(tiny_overrides(store_copy)), timeout=60)
    assert result.returncode == 2
    assert "no unfinished distill run" in result.stderr
    result = cli("distill", "--resume", "mnist1d-20990101-000000-abcd", "--config",
                 str(REFERENCE_SPEC), *sets(tiny_overrides(store_copy)), timeout=60)
    assert result.returncode == 2
    assert "no unfinished distill run mnist1d-20990101-000000-abcd" in result.stderr
