"""Shared fixtures: one local Ray per session, a tiny spec, a store with a trained teacher and
one that also holds the teacher's logit cache.

Integration tests run the real thing small: real local Ray, real DeepSpeed engines, real
subprocesses of the `distillery` CLI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SPEC = ROOT / "jobs" / "configs" / "mnist1d.yaml"

# Small enough for 2 cores: ~1k labelled rows, 2k transfer rows, 2-3 epochs.
TINY = [
    "data.num_samples=1000",
    "data.transfer.num_samples=2000",
    "teacher.model.channels=[16,16]",
    "teacher.model.hidden=32",
    "teacher.train.epochs=2",
    "teacher.train.checkpoint_every=1",
    "teacher.inference.batch_size=512",
    "distill.epochs=2",
    "evaluate.latency.repetitions=20",
    "evaluate.latency.seconds=0.3",
]

BUCKET = "distillery-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Alert webhooks read their URL from the environment in the router's process. Set here, before
# the session's Ray starts, so that its workers inherit it. The socket stays open from now on
# (a receiver serves on it), so that no process can take the port in between.
WEBHOOK_ENV, WEBHOOK_SOCKET = "DISTILLERY_TEST_WEBHOOK_URL", socket.create_server(("127.0.0.1", 0))
os.environ[WEBHOOK_ENV] = f"http://127.0.0.1:{WEBHOOK_SOCKET.getsockname()[1]}/hook"

# Ray exports custom metrics to its Prometheus endpoint every 10 s by default; tests that read
# them back (tests/test_faults.py, tests/test_monitoring_app.py) would wait up to that long for
# each one. Every 2 s instead, for the session's Ray and the Rays its subprocesses start.
os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
# Ray Train's controller polls its workers every 2 s: a finished run is noticed up to 2 s late,
# ~1.5 s on average, for each of the suite's ~50 training runs (measured: a 1-worker run of a
# tiny model, 12.3 s -> 11.2 s). Polling every 0.25 s costs nothing here.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start their own Ray run last, in file order: each one after a test on the
    session's Ray shuts that Ray down, and the next such test starts it again (~8 s a time)."""
    items.sort(key=lambda item: "no_local_ray" in item.fixturenames)


@pytest.fixture
def local_ray():
    """The session's in-process local Ray, started as the CLI starts it (on first use, then
    kept for later tests)."""
    from distillery.runtime import ensure_ray

    ensure_ray()


@pytest.fixture
def no_local_ray():
    """For tests that start Ray in subprocesses: two Rays on 2 cores would starve each other."""
    import ray

    ray.shutdown()


def tiny_overrides(store: Path, *extra: str) -> list[str]:
    return [*TINY, f"store={store}", *extra]


def tiny_spec(store: Path, *extra: str):
    from distillery.config import load_spec

    return load_spec(REFERENCE_SPEC, tiny_overrides(store, *extra))


@pytest.fixture(scope="session")
def teacher_store(tmp_path_factory) -> Path:
    """A store holding a trained tiny teacher (trained once, in-process, on the local Ray)."""
    from distillery.runtime import ensure_ray
    from distillery.stages import Pipeline

    store = tmp_path_factory.mktemp("teacher-store")
    ensure_ray()
    # one worker: two cost ~7 s more here, and later stages find the teacher by name
    Pipeline(tiny_spec(store, "teacher.train.num_workers=1")).train_teacher()
    return store


@pytest.fixture(scope="session")
def cached_teacher_store(teacher_store, tmp_path_factory) -> Path:
    """The teacher store plus the teacher's logit cache of the tiny spec's data (built once,
    in-process), for tests of what reads the cache: each would otherwise build the same one.
    The cache itself is tested in tests/test_cache.py."""
    from distillery.runtime import ensure_ray
    from distillery.stages import Pipeline

    store = tmp_path_factory.mktemp("cached-teacher-store") / "store"
    shutil.copytree(teacher_store, store)
    ensure_ray()
    Pipeline(tiny_spec(store)).teacher_infer()
    return store


@pytest.fixture
def store_copy(teacher_store, tmp_path) -> Path:
    """A private copy of the teacher store, so a test's writes never leak into another's."""
    dst = tmp_path / "store"
    shutil.copytree(teacher_store, dst)
    return dst


@pytest.fixture
def cached_store_copy(cached_teacher_store, tmp_path) -> Path:
    """A private copy of the teacher store with the teacher's logit cache."""
    dst = tmp_path / "store"
    shutil.copytree(cached_teacher_store, dst)
    return dst


def add_students(root) -> None:
    """`good`: the teacher's own weights (agreement 1); `bad`: random weights, the newest."""
    from distillery.config import parse_model_spec
    from distillery.models import build_model, model_card, save_model
    from distillery.storage import Store

    store = Store(str(root))
    teacher = ("teachers", "cnn-teacher",
               store.read_json("teachers", "cnn-teacher", "latest.json")["fingerprint"])
    card = store.read_json(*teacher, "card.json")
    for name in ("model.pt", "model.ts"):
        store.write_bytes(store.read_bytes(*teacher, name), "students", "good", name)
    # older than `bad` by construction (cards count whole seconds): `bad` is the newest
    store.write_json({**card, "role": "student", "run_id": "good",
                      "created": "2000-01-01T00:00:00Z"}, "students", "good", "card.json")
    spec = parse_model_spec({"arch": "cnn1d", "channels": [8, 16], "hidden": 16})
    model = build_model(spec, card["num_features"], card["num_classes"])
    save_model(store, ("students", "bad"), model, model_card(
        model, spec, num_features=card["num_features"], num_classes=card["num_classes"],
        role="student", run_id="bad", spec={"name": "mnist1d"}))


def deploy_app(spec, port: int, token: str) -> None:
    """The Serve app of `spec` on the session's local Ray, HTTP on 127.0.0.1:port."""
    from ray import serve

    from distillery.serving.admin import token_digest
    from distillery.serving.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(spec, token_digest(token)), name="distillery", route_prefix="/")


def cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed `distillery` CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "distillery.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


# A line Ray's log monitor forwards from another process: "(raylet) ..." or, colored or not,
# "(ServeController pid=22418) ...".
RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)?\((raylet|\w+(:\w+)* pid=\d+)")


@pytest.fixture
def cli_inprocess(monkeypatch, capsys):
    """`cli` without the subprocess, for refusals that come before any Ray work: the same
    arguments (less `timeout`) and result, from `distillery.cli.main` run here, in ROOT.
    A fresh process costs 0.5-7 s of imports; one test per family keeps one, to check that it
    prints one line and no traceback. `env`, as for `cli`, is the whole environment of the call;
    the test's own is restored after it. A call that reaches `ensure_ray` fails the test: the
    session's Ray is up, so a refusal moved after it would otherwise pass, and run real work."""
    import distillery.runtime
    from distillery.cli import main

    def no_ray(*_args, **_kwargs):
        raise AssertionError("the call reached ensure_ray: a refusal comes before any Ray work")

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        with monkeypatch.context() as patch:
            patch.chdir(ROOT)
            patch.setattr(distillery.runtime, "ensure_ray", no_ray)
            if env is not None:
                for name in set(os.environ) - set(env):
                    patch.delenv(name)
                for name, value in env.items():
                    patch.setenv(name, value)
            if "boto3" in sys.modules:  # its default session keeps the credentials it found
                patch.setattr(sys.modules["boto3"], "DEFAULT_SESSION", None)
            capsys.readouterr()
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse: status 2 after its usage message
                code = exit_.code or 0
            out, err = capsys.readouterr()
        # the session's Ray forwards its workers' output to this process whenever it comes (a
        # Serve shutdown of an earlier test, say): those lines are not the CLI's
        out, err = ("".join(line for line in text.splitlines(keepends=True)
                            if not RAY_FORWARDED.match(line)) for text in (out, err))
        return subprocess.CompletedProcess(["distillery", *args], code, out, err)

    return run


def replicas(deployment: str) -> dict[str, int]:
    """{Serve's replica id (the `replica` tag of its metrics): pid} of the live replicas of one
    deployment of the app."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:distillery:{deployment}"),
                                  ("state", "=", "ALIVE")])
    return {a.name.rsplit("#", 1)[1]: a.pid for a in actors}


def load_bench(name: str):
    """bench/<name>.py as a module. Registered in sys.modules: dataclasses look their module up
    while it executes, and Ray pickles what it defines (a Train callback) by value."""
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def smoke_bench(name: str, store: Path, tmp_path: Path, *argv: str) -> dict:
    """bench/<name>.py --smoke on `store`, with the students `add_students` makes (the newest is
    the one served), its results to tmp_path: the results it returns, once checked to be what
    it wrote, with BENCHMARKS.md left alone and nothing written into `store`'s serve/."""
    add_students(store)
    output = tmp_path / f"{name}.json"
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    result = load_bench(name).main(["--smoke", "--store", str(store), "--output", str(output),
                                    *argv])
    assert json.loads(output.read_text()) == json.loads(json.dumps(result))
    assert (ROOT / "BENCHMARKS.md").read_text() == benchmarks  # --smoke leaves it alone
    assert not (store / "serve").exists()  # nothing written into the user's store
    return result


@pytest.fixture(scope="session")
def s3_env():
    """Environment for a client of the local S3 server, as AWS's standard variables give it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline, "S3 server did not start"
            time.sleep(0.2)
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        yield env
    finally:
        server.terminate()
        server.wait()


def s3_client(env):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
