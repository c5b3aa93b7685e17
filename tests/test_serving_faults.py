"""Faults injected into the running Serve app on the session's local Ray, each driven by a real
HTTP client: a student replica killed under load, a student that fails every call, the store
unreachable for a while, a corrupted rollout state file. The client must never see an error,
and nothing is lost but the request-log rows the documented drop counter counts. Serve stays up
for the whole module (one port); each test deploys its own app over the last.

(A Ray Train worker killed mid-epoch, a killed inference actor and a teacher-infer killed
mid-write are in tests/test_stage_faults.py.)
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from distillery.config import RolloutSpec
from distillery.monitoring.request_log import read_requests
from distillery.serving.rollout import load_state
from distillery.storage import Store
from distillery.store_layout import ROLLOUT_STATE

from helpers import add_students, deploy_app, free_port, replicas, tiny_spec

TOKEN = "faults-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
QUIET = ["serve.student=good", "serve.rollout.shadow_fraction=0",
         "monitor.check_interval_s=null"]  # no mirrored calls, no drift checks


@pytest.fixture(scope="module")
def port():
    """Serve's HTTP port for this module's apps; Serve is shut down after the last test."""
    from ray import serve

    yield free_port()
    serve.shutdown()


@pytest.fixture
def http(port):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client


def add_failing_student(root) -> None:
    """`failing`: a TorchScript model exported for 41 features under a card that says 40, so
    every call raises inside the replica."""
    store = Store(str(root))
    teacher = ("teachers", "cnn-teacher",
               store.read_json("teachers", "cnn-teacher", "latest.json")["fingerprint"])
    card = store.read_json(*teacher, "card.json")
    model = torch.jit.trace(torch.nn.Linear(41, card["num_classes"]), torch.zeros(1, 41))
    path = root / "failing.ts"
    torch.jit.save(model, str(path))
    store.write_bytes(path.read_bytes(), "students", "failing", "model.ts")
    store.write_json({**card, "role": "student", "run_id": "failing",
                      "architecture": {"arch": "torchscript", "path": str(path)}},
                     "students", "failing", "card.json")


def predict(http: httpx.Client, user: int) -> httpx.Response:
    """One routed request of one row, sticky by `user`."""
    row = np.random.default_rng(user).normal(size=(1, 40)).tolist()
    return http.post("/v1/models/mnist1d:predict", json={"instances": row, "user_id": user})


def burst(http: httpx.Client, users: range, into: list | None = None) -> list[httpx.Response]:
    """Requests from 8 threads; each response also goes to `into` as it arrives."""
    into = [] if into is None else into

    def send(user: int) -> httpx.Response:
        response = predict(http, user)
        into.append(response)
        return response

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(send, users))


def metric_total(name: str, expected: float, timeout: float = 30, **tags: str) -> float:
    """The sum of a counter's series (with `tags`) on this node's Prometheus endpoint, polled
    until it equals `expected` (Ray exports every few seconds) or `timeout` passes."""
    import ray

    url = f"http://127.0.0.1:{ray._private.worker.global_worker.node.metrics_export_port}/metrics"
    pattern = re.compile(rf"^(?:ray_)?{name}(?:_total)?{{([^}}]*)}} (\S+)$", re.M)
    deadline, total = time.monotonic() + timeout, None
    while total != expected and time.monotonic() < deadline:
        text = httpx.get(url, timeout=10).text
        total = sum(float(value) for labels, value in pattern.findall(text)
                    if all(f'{k}="{v}"' in labels for k, v in tags.items()))
        time.sleep(0.5)
    return total


def monitor_status(http: httpx.Client) -> dict:
    return http.get("/admin/rollout", headers=ADMIN).json()["monitor"]["request_log"]


def wait_until(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


def wait_for_batch_answered(answered: list, count: int) -> None:
    """Returns within a few ms of the client's `count`-th answer (polling every 10 ms; a
    batch's answers arrive together)."""
    deadline = time.monotonic() + 60
    while len(answered) < count:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


ALL_TO_STUDENT = ["serve.rollout.steps=[100]", "serve.rollout.gates.min_agreement=null",
                  "serve.rollout.gates.max_error_rate=null"]  # and no gate that would move it


def test_killed_student_replica_under_load_costs_no_request_and_is_restarted(
        store_copy, local_ray, port, http):
    add_students(store_copy)
    # the 8 clients' calls wait 1 s in the replica for a batch of 64 that never fills, so each
    # batch is the 8 of them and the replica is empty only while answers travel back; the
    # student has a replica of its own to kill only when the topology is separate
    deploy_app(tiny_spec(store_copy, *QUIET, *ALL_TO_STUDENT, "serve.topology=separate",
                         "serve.student_deployment.batch_wait_timeout_s=1.0",
                         "serve.student_deployment.max_batch_size=64"), port, TOKEN)
    [victim] = replicas("student").values()
    [router] = replicas("Router")
    answered: list[httpx.Response] = []
    load = threading.Thread(target=burst, args=(http, range(64), answered))
    load.start()
    wait_for_batch_answered(answered, 16)
    time.sleep(0.4)  # the next 8 calls are inside the replica, waiting out its batch
    os.kill(victim, signal.SIGKILL)
    load.join()
    assert [r.status_code for r in answered] == [200] * 64  # no client saw the kill
    # the calls the dead replica had taken fail and the teacher answers them; calls it had
    # not taken yet Serve holds until the new replica is up
    fell_back = [r.json()["model"] for r in answered].count("teacher")
    assert fell_back >= 1
    [restarted] = wait_until(lambda: [p for p in replicas("student").values() if p != victim])
    assert restarted != victim and predict(http, 1).json()["model"] == "student"
    assert metric_total("distillery_student_fallbacks", fell_back, replica=router) == fell_back


def test_failing_student_is_answered_by_the_teacher_or_503_when_fallback_is_off(
        store_copy, local_ray, port, http):
    add_failing_student(store_copy)
    spec = tiny_spec(store_copy, *QUIET, *ALL_TO_STUDENT, "serve.student=failing")
    deploy_app(spec, port, TOKEN)
    [router] = replicas("Router")
    answers = burst(http, range(40))
    assert {(r.status_code, r.json()["model"]) for r in answers} == {(200, "teacher")}
    direct = http.post("/v1/models/student:predict", json={"instances": [[0.0] * 40]})
    assert direct.json()["error"]["code"] == "model_error"  # asked for the student by name
    assert metric_total("distillery_student_fallbacks", 40, replica=router) == 40

    deploy_app(tiny_spec(store_copy, *QUIET, *ALL_TO_STUDENT, "serve.student=failing",
                         "serve.fallback_to_teacher=false"), port, TOKEN)
    answers = burst(http, range(10))
    assert {(r.status_code, r.json()["error"]["code"]) for r in answers} == {
        (503, "model_error")}


def test_store_outage_buffers_request_log_rows_then_drops_exactly_the_counted_overflow(
        store_copy, local_ray, port, http):
    add_students(store_copy)
    deploy_app(tiny_spec(store_copy, *QUIET, "monitor.request_log.flush_seconds=0.2",
                         "monitor.request_log.max_buffer_rows=100",
                         "serve.rollout.interval_s=0.2"), port, TOKEN)
    [router] = replicas("Router")
    away = store_copy.with_name("store-away")
    assert {r.status_code for r in burst(http, range(40))} == {200}
    wait_until(lambda: monitor_status(http)["written"] == 40)
    try:  # the store becomes unreachable: every write under it fails
        store_copy.rename(away)
        store_copy.write_text("not a directory")
        assert {r.status_code for r in burst(http, range(40, 200))} == {200}  # serving is fine
        # flushes fail and give their rows back; polled, as a flush in flight holds its rows
        expected, deadline = {"buffered": 100, "written": 40, "dropped": 60}, time.monotonic() + 10
        while (status := monitor_status(http)) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == expected
        # an operator's action takes effect at once, though the state cannot be saved yet
        paused = http.post("/admin/rollout/pause", headers=ADMIN)
        assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    finally:  # the store is back
        store_copy.unlink()
        away.rename(store_copy)
    # the buffer reaches the store; the overflow stays dropped, and counted. Waited for until
    # every row is accounted for: a write in flight shows its rows neither buffered nor written
    after = wait_until(lambda: (s := monitor_status(http))["buffered"] == 0
                       and s["written"] + s["dropped"] == 200 and s)
    assert after == {"buffered": 0, "written": 140, "dropped": 60}
    store = Store(str(store_copy))  # the next controller tick saved the paused state
    wait_until(lambda: store.exists(*ROLLOUT_STATE) and store.read_json(*ROLLOUT_STATE)["status"]
               == "paused")
    # rows requested - rows dropped = rows in the store (200 - 60)
    logged = read_requests(store, datetime(2026, 1, 1, tzinfo=timezone.utc),
                           datetime.now(timezone.utc) + timedelta(minutes=1))
    assert logged.num_rows == 140
    assert metric_total("distillery_request_log_rows", 60, replica=router,
                        outcome="dropped") == 60


def test_corrupted_rollout_state_serves_from_the_teacher_says_why_and_stays_up(
        store_copy, local_ray, port, http):
    import ray

    add_students(store_copy)
    store = Store(str(store_copy))
    store.write_bytes(b'{"student": "good", "weight": ', *ROLLOUT_STATE)
    spec = tiny_spec(store_copy, *QUIET, "serve.rollout.interval_s=0.2")
    deploy_app(spec, port, TOKEN)
    router = replicas("Router")
    assert http.get("/healthz").json() == {"status": "ok", "rollout": "paused",
                                           "student_weight": 0}
    answers = burst(http, range(50))
    assert {(r.status_code, r.json()["model"]) for r in answers} == {(200, "teacher")}
    status = http.get("/admin/rollout", headers=ADMIN).json()
    assert "rollout-state.json is unreadable" in status["error"]
    time.sleep(1.0)  # controller ticks hold the safe state; the replica is not restarted
    assert replicas("Router") == router
    assert http.get("/healthz").json()["student_weight"] == 0
    # the operator resumes: the canary starts at its first step, the file is valid again
    resumed = http.post("/admin/rollout/resume", headers=ADMIN).json()
    assert (resumed["status"], resumed["weight"], "error" in resumed) == ("running", 5, False)
    assert load_state(store, spec.serve.rollout, "good", time.time())[0]["weight"] == 5
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    errors = [line for p in logs.glob("replica_distillery_RolloutCoordinator_*.log")
              for line in p.read_text().splitlines() if "rollout-state.json is unreadable" in line]
    assert errors and all("ERROR" in line for line in errors)


def test_a_directory_in_place_of_the_state_file_gives_the_safe_state(tmp_path):
    store = Store(str(tmp_path))
    (tmp_path / "serve" / "rollout-state.json").mkdir(parents=True)
    state, note = load_state(store, RolloutSpec(), "good", 0.0)
    assert (state["status"], state["weight"]) == ("paused", 0) and "is a directory" in note
