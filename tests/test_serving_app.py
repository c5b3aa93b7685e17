"""The Serve app on the session's local Ray, driven by a real HTTP client: a canary promoted
step by step, a restart that resumes mid-rollout, a bad student rolled back, bad inputs, admin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pyarrow.compute as pc
import torch

from distillery.monitoring.request_log import read_requests
from distillery.storage import Store

from helpers import add_students, deploy_app, free_port, tiny_spec


def test_a_router_without_scheduled_checks_never_imports_evidently(subprocesses):
    """Importing Evidently takes seconds, paid by every replica start: only a router that runs
    the monitoring check (monitor.check_interval_s) imports it, in __init__."""
    code = "import sys, distillery.serving.router; print('evidently' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "False"


TOKEN = "test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ROLLOUT = ["serve.rollout.min_requests=40", "serve.rollout.min_seconds=0.5",
           "serve.rollout.interval_s=0.5", "serve.rollout.shadow_fraction=1.0",
           "serve.rollout.failure_threshold=2", "serve.rollout.gates.min_agreement=0.9",
           "serve.rollout.gates.min_agreement_samples=20",
           "serve.rollout.gates.max_error_rate=0.0",
           "monitor.check_interval_s=null",  # no drift checks: tests/test_monitoring_app.py
           "serve.router_replicas=2"]  # the rollout is the coordinator's, whichever answers


class Client:
    def __init__(self, port: int):
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.pool = ThreadPoolExecutor(8)

    def predict(self, user: int) -> httpx.Response:
        rows = np.random.default_rng(user).normal(size=(1, 40)).tolist()
        return self.http.post("/v1/models/mnist1d:predict",
                              json={"instances": rows, "user_id": user})

    def burst(self, n: int, start: int) -> list[httpx.Response]:
        return list(self.pool.map(self.predict, range(start, start + n)))

    def rollout(self) -> dict:
        return self.http.get("/admin/rollout", headers=ADMIN).json()

    def admin(self, action: str) -> dict:
        response = self.http.post(f"/admin/rollout/{action}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    def stream_until(self, done, limit: int = 2000) -> tuple[list[int], list[float], dict]:
        """Bursts of requests until done(status); (HTTP statuses, weights seen, status)."""
        statuses, weights, sent = [], [], 0
        while sent < limit:
            statuses += [r.status_code for r in self.burst(16, sent)]
            sent += 16
            status = self.rollout()
            if not weights or weights[-1] != status["weight"]:
                weights.append(status["weight"])
            if done(status):
                return statuses, weights, status
        raise AssertionError(f"not done after {limit} requests: {json.dumps(status)[:2000]}")


BAD_INPUTS = [  # (path, body) -> 4xx
    ("/v1/models/mnist1d:predict", b"{not json"),
    ("/v1/models/mnist1d:predict", b""),
    ("/v1/models/mnist1d:predict", b'{"rows": [[1]]}'),
    ("/v1/models/mnist1d:predict", b'{"instances": []}'),
    ("/v1/models/mnist1d:predict", json.dumps({"instances": [[1.0] * 39]}).encode()),
    ("/v1/models/mnist1d:predict", json.dumps({"instances": [["a"] * 40]}).encode()),
    ("/v1/models/student:predict", ('{"instances": [[NaN' + ", 1" * 39 + "]]}").encode()),
    ("/v1/models/teacher:predict", json.dumps({"instances": [[1.0] * 40] * 1025}).encode()),
    ("/v1/models/teacher:predict", b'{"instances": [[1]], "pad": "' + b"x" * 1_000_001 + b'"}'),
    ("/v1/models/nobody:predict", json.dumps({"instances": [[1.0] * 40]}).encode()),
    ("/v2/models/teacher/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 40],
                                                         "datatype": "BYTES",
                                                         "data": ["a"] * 40}]}).encode()),
    ("/v2/models/teacher/infer", json.dumps({"inputs": [{"name": "input", "shape": [2, 40],
                                                         "datatype": "FP32",
                                                         "data": [1.0] * 40}]}).encode()),
]


def check_http_api(client: Client) -> None:
    http = client.http
    assert http.get("/healthz").json()["status"] == "ok"
    assert http.get("/v2/health/ready").json() == {"ready": True}
    student = http.get("/v1/models/student").json()
    assert student["model_version"] == "good"
    assert student["class_names"] == [str(digit) for digit in range(10)]  # from the card
    answer = client.predict(3).json()
    assert answer["labels"] == [student["class_names"][p] for p in answer["predictions"]]
    assert http.get("/v2/models/teacher").json()["inputs"][0]["shape"] == [-1, 40]
    for path, body in BAD_INPUTS:
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, body[:80], response.text)
        error = response.json()["error"]
        assert set(error) == {"code", "message"} if path.startswith("/v1") else isinstance(
            error, str)
        assert client.predict(0).status_code == 200  # the server keeps serving
    v2 = http.post("/v2/models/student/infer", json={"id": "client-7", "inputs": [
        {"name": "input", "shape": [2, 40], "datatype": "FP32", "data": [0.5] * 80}]}).json()
    assert v2["model_name"] == "student" and v2["outputs"][1]["shape"] == [2]
    assert v2["id"] == "client-7"  # the protocol echoes the client's request id
    assert http.get("/admin/rollout").status_code == 401
    assert http.post("/admin/rollout/advance",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401


def check_each_model_answers_its_own_calls(client: Client, store: Path) -> None:
    """Concurrent calls to teacher and student (both in the router's process when colocated,
    batched apart) each get their own model's probabilities."""
    from distillery.models import load_model

    rows = np.random.default_rng(9).normal(size=(32, 1, 40)).astype(np.float32)
    names = ["teacher", "student"] * 16
    answers = list(client.pool.map(lambda n, x: client.http.post(
        f"/v1/models/{n}:predict", json={"instances": x.tolist()}).json(), names, rows))
    teacher = Store(str(store)).read_json("teachers", "cnn-teacher", "latest.json")
    models = {"teacher": load_model(Store(str(store)), ("teachers", "cnn-teacher",
                                                         teacher["fingerprint"]))[0],
              "student": load_model(Store(str(store)), ("students", "bad"))[0]}
    for name, x, answer in zip(names, rows, answers, strict=True):
        assert answer["model"] == name
        with torch.inference_mode():
            expected = torch.softmax(models[name](torch.from_numpy(x)), dim=1).numpy()
        np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-4, atol=1e-6)


def check_triton_client(client: Client, port: int) -> None:
    """Triton's own HTTP client with its defaults (binary input, binary outputs) gets the
    predictions of the JSON form, from teacher, student and the routed name (sticky by header,
    so both forms reach the same model)."""
    import tritonclient.http as triton

    rows = np.random.default_rng(5).normal(size=(3, 40)).astype(np.float32)
    server = triton.InferenceServerClient(f"127.0.0.1:{port}")
    assert server.is_server_ready()
    assert "binary_tensor_data" in server.get_server_metadata()["extensions"]
    for name in ("teacher", "student", "mnist1d"):
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)  # binary_data=True by default
        result = server.infer(name, [tensor], headers={"x-user-id": "u-3"})
        expected = client.http.post(f"/v1/models/{name}:predict", json={
            "instances": rows.tolist()}, headers={"x-user-id": "u-3"}).json()
        assert result.get_response()["model_name"] == expected["model"]
        assert result.as_numpy("predictions").tolist() == expected["predictions"]
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"],
                                   rtol=1e-6)


def test_canary_promotes_resumes_after_restart_and_a_bad_student_rolls_back(
        store_copy, local_ray, monkeypatch):
    from ray import serve

    from distillery.serving.client import admin_call

    monkeypatch.setenv("DISTILLERY_ADMIN_TOKEN", TOKEN)
    add_students(store_copy)
    port = free_port()
    client = Client(port)
    try:
        deploy_app(tiny_spec(store_copy, "serve.student=good", *ROLLOUT), port, TOKEN)
        check_http_api(client)
        check_triton_client(client, port)
        # healthy gates promote 5 -> 25 -> 50; pause there and restart the app
        statuses, weights, status = client.stream_until(lambda s: s["weight"] >= 50)
        spec = tiny_spec(store_copy, "serve.student=good", *ROLLOUT)
        assert admin_call(spec, "pause", f"http://127.0.0.1:{port}")["status"] == "paused"
        assert set(statuses) == {200} and weights[:3] == [5, 25, 50]
        decision = status["decisions"][-1]
        assert decision["action"] == "promote" and decision["gates"][0]["value"] >= 0.9
        time.sleep(0.5)  # each replica takes the new weight within one check interval
        models = {client.predict(7).json()["model"] for _ in range(5)}
        assert len(models) == 1  # sticky: one user, one model at a step
        answer = client.predict(8).json()
        feedback = {"request_id": answer["request_id"], "success": True}
        assert client.http.post("/v1/feedback", json=feedback).json()["model"] == answer["model"]
        assert client.http.post("/v1/feedback", json=feedback).status_code == 404  # once only
        assert client.rollout()["ab"][answer["model"]]["outcomes"] == 1

        serve.delete("distillery")
        deploy_app(tiny_spec(store_copy, "serve.student=good", *ROLLOUT), port, TOKEN)
        status = client.rollout()
        assert (status["status"], status["weight"]) == ("paused", 50)
        client.admin("resume")
        statuses, weights, status = client.stream_until(lambda s: s["status"] == "completed")
        assert set(statuses) == {200} and weights[-1] == 100
        assert Store(str(store_copy)).read_json("serve", "rollout-state.json")["status"] == (
            "completed")

        # a student with random weights disagrees with the teacher: rolled back, no failures
        deploy_app(tiny_spec(store_copy, "serve.student=bad", *ROLLOUT), port, TOKEN)
        check_each_model_answers_its_own_calls(client, store_copy)
        statuses, _, status = client.stream_until(lambda s: s["status"] == "rolled_back")
        assert set(statuses) == {200} and status["weight"] == 0
        assert "agreement" in status["decisions"][-1]["reason"]
        assert {r.json()["model"] for r in client.burst(32, 0)} == {"teacher"}

        # A/B: a fixed split, per-arm success rates from feedback and their z-test
        deploy_app(tiny_spec(store_copy, "serve.student=good", *ROLLOUT, "serve.rollout.mode=ab",
                             "serve.rollout.ab_split=50"), port, TOKEN)
        answers = [r.json() for r in client.burst(64, 1000)]
        assert {a["model"] for a in answers} == {"teacher", "student"}
        for a in answers:  # the student "succeeds" every time, the teacher never
            client.http.post("/v1/feedback", json={"request_id": a["request_id"],
                                                   "success": a["model"] == "student"})
        ab = client.rollout()["ab"]
        assert ab["student"]["rate"] == 1.0 and ab["teacher"]["rate"] == 0.0
        # both router replicas answered (an id starts with its replica's incarnation) and
        # every outcome counts, whichever replica took it: the proxy picks one at random per
        # request, so about half the feedback reached a replica that had not answered
        assert len({a["request_id"].split("-")[0] for a in answers}) == 2
        assert ab["student"]["outcomes"] + ab["teacher"]["outcomes"] == 64
        assert ab["p_value"] < 1e-6 and client.rollout()["weight"] == 50

        # shadow: the teacher answers; the mirrored student (slowed by a 0.5 s batch wait)
        # never adds its latency to the response
        shadow = tiny_spec(store_copy, "serve.student=good", *ROLLOUT, "serve.rollout.mode=shadow",
                           "serve.student_deployment.batch_wait_timeout_s=0.5",
                           "serve.student_deployment.max_batch_size=64")
        deploy_app(shadow, port, TOKEN)
        start = time.perf_counter()
        assert client.http.post("/v1/models/student:predict",
                                json={"instances": [[0.0] * 40]}).status_code == 200
        assert time.perf_counter() - start >= 0.5
        latencies = []
        for user in range(24):
            start = time.perf_counter()
            assert client.predict(user).json()["model"] == "teacher"
            latencies.append(time.perf_counter() - start)
        # awaiting the mirror would put every response at >= 0.5 s
        assert sorted(latencies)[12] < 0.25, latencies
        time.sleep(1.0)  # the mirrored calls finish after their responses
        status = client.rollout()
        assert (status["status"], status["weight"]) == ("observing", 0)
        assert status["gates"][0]["value"] == 1.0  # agreement over >= 20 mirrored rows
    finally:
        serve.shutdown()
    # admin calls, rollout decisions and errors were all logged, the token never
    import ray
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaked = [p for p in logs.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
    # every answered request is in the request log; mirrored ones carry the pair's agreement
    logged = read_requests(Store(str(store_copy)), datetime(2026, 1, 1, tzinfo=timezone.utc),
                           datetime.now(timezone.utc) + timedelta(minutes=1))
    assert logged.num_rows >= 200
    assert set(logged.column("model").to_pylist()) == {"teacher", "student"}
    assert logged.filter(pc.is_valid(logged["agrees"])).num_rows > 0
