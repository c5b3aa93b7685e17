"""Faults injected into real runs: a killed Ray Train worker and a killed distill, a killed
inference actor and a teacher-infer killed mid-write. Each runs the CLI in a subprocess with its
own embedded Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq

from helpers import REFERENCE_SPEC, ROOT, sets, tiny_overrides


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
    line = [li for li in log.splitlines() if f"[student] epoch {epoch}/5 " in li][-1]
    return float(line.split(" loss=")[1].split()[0])


def epochs_logged(log: str) -> list[int]:
    """The epochs rank 0 logged, in order (it logs one once its report and checkpoint went
    through)."""
    return [int(li.split("[student] epoch ")[1].split("/")[0]) for li in log.splitlines()
            if "[student] epoch " in li]


def test_killed_training_worker_costs_at_most_one_epoch_and_killed_distill_resumes(cli,
        store_copy, tmp_path, no_local_ray):
    """One distill run, two faults: a Ray Train worker SIGKILLed mid-epoch (Ray Train restarts
    the worker group from the last checkpoint), then the CLI and its embedded Ray SIGKILLed
    (`distill --resume` goes on from the last checkpoint). One run for both saves a Ray start
    and a Ray Train fit."""
    overrides = tiny_overrides(store_copy, "data.transfer.num_samples=20000", "distill.epochs=5",
                               "distill.max_failures=1")
    log = tmp_path / "run.log"
    proc = start("distill", overrides, log)
    students = store_copy / "students"
    try:
        wait_for(lambda: 2 in epochs_logged(log.read_text()), proc, log)
        (worker, *_) = ray_processes("ray::RayTrainWorker", proc.pid)
        worker.kill()  # mid-epoch 3
        # an epoch trained by the new worker group, which restored a checkpoint
        wait_for(lambda: epochs_logged(log.read_text().partition("resumed from epoch ")[2]),
                 proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray, mid-run
        proc.wait()
    first = log.read_text()
    # every epoch up to the kill trained, and at most one (the one whose checkpoint was in
    # flight when the worker died) twice; training went on from the checkpoint's weights
    epochs = epochs_logged(first)
    runs_of_epoch = [epochs.count(k) for k in range(1, max(epochs) + 1)]
    assert min(runs_of_epoch) == 1 and sum(runs_of_epoch) <= len(runs_of_epoch) + 1, epochs
    restored_at = int(first.split("resumed from epoch ")[1].split()[0])
    assert epoch_loss(first, restored_at + 1) < epoch_loss(first, 1)
    (run,) = students.iterdir()
    assert not (run / "card.json").exists()

    result = cli("distill", "--resume", "--config", str(REFERENCE_SPEC), *sets(overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"resuming run {run.name}" in output
    resumed_at = int(output.split("resumed from epoch ")[1].split()[0])
    assert resumed_at >= restored_at  # that checkpoint was registered, the restart used it
    # epochs up to the checkpoint are not trained again, and training goes on from its weights
    assert epochs_logged(output) == list(range(resumed_at + 1, 6))
    assert epoch_loss(output, resumed_at + 1) < epoch_loss(first, 1)
    card = json.loads((run / "card.json").read_text())
    assert card["run_id"] == run.name
    assert card["metrics"]["val_accuracy"] > 0.3  # 10 classes: chance is 0.1


def test_teacher_infer_killed_mid_write_leaves_no_cache_and_a_killed_inference_actor_is_retried(
        store_copy, tmp_path, no_local_ray):
    """The driver killed mid-write leaves nothing that reads as a complete cache; the rerun,
    with one of its inference actors killed, retries its work and writes every row once. (The
    rerun doubles as the killed-actor run, which would otherwise be a third 30k-row run.)"""
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

    log = tmp_path / "rerun.log"
    rerun = start("teacher-infer", overrides, log)
    wait_for(lambda: ray_processes("MapWorker", rerun.pid), rerun, log)
    time.sleep(1.0)  # let it take work
    ray_processes("MapWorker", rerun.pid)[0].kill()
    assert rerun.wait(timeout=400) == 0, log.read_text()[-3000:]
    assert "wrote 30720 rows" in log.read_text()
    manifest = json.loads((cache / "manifest.json").read_text())
    ids = pq.ParquetDataset(sorted(cache.glob("*.parquet"))).read(columns=["id"])["id"]
    assert manifest["rows"] == len(ids) == 720 + 30000
    assert len(set(ids.to_pylist())) == len(ids)  # every row once: no loss, no duplicates
