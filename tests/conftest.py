"""Shared fixtures: one local Ray per session, a store with a trained teacher and one that also
holds the teacher's logit cache, the CLI in a subprocess, the local S3 server; and the rule that
marks integration tests.

Integration tests run the real thing small: real local Ray, real DeepSpeed engines, real
subprocesses of the `distillery` CLI. Helpers that are not fixtures are in helpers.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import RAY_FORWARDED, ROOT, free_port, run_cli, tiny_spec

# Ray exports custom metrics to its Prometheus endpoint every 10 s by default; tests that read
# them back (tests/test_serving_faults.py, tests/test_monitoring_app.py) would wait up to that
# long for each one. Every 2 s instead, for the session's Ray and the Rays its subprocesses start.
os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
# Ray Train's controller polls its workers every 2 s: a finished run is noticed up to 2 s late,
# for each of the suite's training runs. Polling every 0.25 s costs nothing here.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


# A test that uses one of these fixtures, directly or through another fixture, starts or
# reaches a real component (Ray, Serve, DeepSpeed, a subprocess, a server, the network) and is
# marked `integration` by the rule below; the others are the fast set (`make test-fast`).
INTEGRATION_FIXTURES = frozenset({
    "local_ray", "no_local_ray", "teacher_store", "cached_teacher_store", "cli", "s3_env",
    "loopback", "subprocesses"})


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests by the rule; run the fast set first, on no Ray (so that a pure
    test cannot lean on a Ray an earlier test left up), then the tests on the session's Ray,
    and those that start their own Ray last, in file order: each one after a test on the
    session's Ray shuts that Ray down, and the next such test would start it again."""
    for item in items:
        if INTEGRATION_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: (item.get_closest_marker("integration") is not None,
                                 "no_local_ray" in item.fixturenames))


# The node id of the fast-set test now running, else None: while it is set, starting a process
# or opening a network socket fails that test, so a test that forgets its fixture is caught.
_pure_test: str | None = None


def _refuse_outside_integration(event: str, args: tuple) -> None:
    if _pure_test is None:
        return
    if event in ("socket.bind", "socket.connect"):
        if args[0].family not in (socket.AF_INET, socket.AF_INET6):
            return
    elif event not in ("subprocess.Popen", "os.posix_spawn", "os.fork"):
        return
    raise AssertionError(
        f"{_pure_test}: {event} in a test that is not marked integration; use one of the "
        f"fixtures that mark it ({', '.join(sorted(INTEGRATION_FIXTURES))})")


sys.addaudithook(_refuse_outside_integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    """The guard is on for a fast-set test's whole protocol: setup of fixtures of any scope,
    the call, and teardown."""
    global _pure_test
    _pure_test = None if item.get_closest_marker("integration") else item.nodeid
    try:
        yield
    finally:
        _pure_test = None


@pytest.fixture
def loopback():
    """For a test that talks over 127.0.0.1 itself (a server in a thread, a closed port)."""


@pytest.fixture
def subprocesses():
    """For a test that starts a process of its own (a bench script, a fresh interpreter)."""


@pytest.fixture(scope="session")
def cli():
    """`helpers.run_cli`: the `distillery` CLI in a subprocess, as a user runs it."""
    return run_cli


@pytest.fixture(scope="session")
def local_ray():
    """The session's in-process local Ray, started as the CLI starts it (on first use, then
    kept for later tests; those that stop it run last)."""
    from distillery.runtime import ensure_ray

    ensure_ray()


@pytest.fixture
def no_local_ray():
    """For tests that start Ray in subprocesses: two Rays on 2 cores would starve each other."""
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def teacher_store(tmp_path_factory) -> Path:
    """A store holding a trained tiny teacher (trained once, in-process, on the local Ray)."""
    from distillery.runtime import ensure_ray
    from distillery.stages import Pipeline

    store = tmp_path_factory.mktemp("teacher-store")
    ensure_ray()
    # one worker: a second is a process start more, and later stages find the teacher by name
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


@pytest.fixture
def cli_inprocess(monkeypatch, capsys):
    """`cli` without the subprocess, for refusals that come before any Ray work: the same
    arguments (less `timeout`) and result, from `distillery.cli.main` run here, in ROOT.
    A fresh process costs seconds of imports; one test per family keeps one, to check that it
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
