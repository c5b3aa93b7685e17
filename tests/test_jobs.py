"""`ray job submit` of a stage against a real `ray start --head` cluster, from a clean clone."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_distill_job_from_a_clean_clone(cluster, store_copy, tmp_path):
    address, env = cluster
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    sets = [a for item in tiny_overrides(store_copy) for a in ("--set", item)]
    result = subprocess.run(
        ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", "jobs/distill.py", "--config", "jobs/configs/mnist1d.yaml", *sets],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "succeeded" in output
    # the job ran the clone's code and committed a student to the store
    (run,) = (store_copy / "students").iterdir()
    assert (run / "card.json").exists() and (run / "model.ts").exists()
