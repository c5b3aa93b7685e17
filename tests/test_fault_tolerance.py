"""Faults injected into real runs: a killed Ray Train worker, a killed inference actor, and a
teacher-infer killed mid-write. Each runs the CLI in a subprocess with its own embedded Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq
import pytest

from conftest import REFERENCE_SPEC, ROOT, cli, tiny_overrides

pytestmark = pytest.mark.integration


def sets(overrides):
    return [arg for item in overrides for arg in ("--set", item)]


def start(command, overrides, log_path):
    return subprocess.Popen(
        [sys.executable, "-m", "distillery.cli", command, "--config", str(REFERENCE_SPEC),
         *sets(overrides)], stdout=open(log_path, "w"), stderr=subprocess.STDOUT, cwd=ROOT,
        start_new_session=True)


def wait_for(condition, proc, log_path, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def ray_processes(title: str, session_pid: int) -> list[psutil.Process]:
    """Ray worker processes of one CLI run (Ray sets the process title to ray::<Actor>...)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if title in " ".join(proc.info["cmdline"] or []) and \
                    os.getsid(proc.pid) == session_pid:
                found.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return found


def epoch_loss(log: str, epoch: int) -> float:
    line = [li for li in log.splitlines() if f"[student] epoch {epoch}/4 " in li][-1]
    return float(line.split(" loss=")[1].split()[0])


def final_val_accuracy(run_dir) -> float:
    return json.loads((run_dir / "card.json").read_text())["metrics"]["val_accuracy"]


def test_killed_training_worker_costs_at_most_one_epoch(store_copy, tmp_path, no_local_ray):
    overrides = tiny_overrides(store_copy, "data.transfer.num_samples=20000", "distill.epochs=4",
                               "distill.max_failures=1")
    log = tmp_path / "run.log"
    proc = start("distill", overrides, log)
    students = store_copy / "students"
    # rank 0 logs an epoch once its report (and checkpoint) went through
    wait_for(lambda: "[student] epoch 2/4" in log.read_text(), proc, log)
    (worker, *_) = ray_processes("ray::RayTrainWorker", proc.pid)
    worker.kill()  # mid-epoch 3
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]

    output = log.read_text()
    assert "resumed from epoch " in output
    # every epoch trained, and at most one (the one whose checkpoint was in flight) twice
    runs_of_epoch = [output.count(f"[student] epoch {k}/4 ") for k in range(1, 5)]
    assert min(runs_of_epoch) == 1 and sum(runs_of_epoch) <= 5, runs_of_epoch
    # training went on from the checkpoint's weights: the loss keeps falling across the kill
    losses = [epoch_loss(output, k) for k in (1, 4)]
    assert losses[1] < losses[0], losses
    (run,) = students.iterdir()
    assert final_val_accuracy(run) > 0.3  # 10 classes: chance is 0.1


def test_killed_inference_actor_is_retried(store_copy, tmp_path, no_local_ray):
    overrides = tiny_overrides(store_copy, "data.transfer.num_samples=30000",
                               "teacher.inference.batch_size=256")
    log = tmp_path / "infer.log"
    proc = start("teacher-infer", overrides, log)
    wait_for(lambda: ray_processes("MapWorker", proc.pid), proc, log)
    time.sleep(1.0)  # let it take work
    ray_processes("MapWorker", proc.pid)[0].kill()
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    (cache,) = (store_copy / "cache").iterdir()
    manifest = json.loads((cache / "manifest.json").read_text())
    ids = pq.ParquetDataset(sorted(cache.glob("*.parquet"))).read(columns=["id"])["id"]
    assert manifest["rows"] == len(ids) == 720 + 30000
    assert len(set(ids.to_pylist())) == len(ids)  # every row once: no loss, no duplicates


def test_teacher_infer_killed_mid_write_leaves_no_complete_looking_cache(store_copy, tmp_path,
                                                                          no_local_ray):
    overrides = tiny_overrides(store_copy, "data.transfer.num_samples=30000",
                               "teacher.inference.batch_size=256")
    log = tmp_path / "infer.log"
    proc = start("teacher-infer", overrides, log)
    cache_root = store_copy / "cache"
    wait_for(lambda: list(cache_root.glob("*/*.parquet")), proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (cache,) = cache_root.iterdir()
    assert not (cache / "manifest.json").exists()

    rerun = cli("teacher-infer", "--config", str(REFERENCE_SPEC), *sets(overrides))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "wrote 30720 rows" in rerun.stdout
    ids = pq.ParquetDataset(sorted(cache.glob("*.parquet"))).read(columns=["id"])["id"]
    assert len(ids) == len(set(ids.to_pylist())) == 30720
