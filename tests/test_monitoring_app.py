"""Monitoring end to end on the session's local Ray: the Serve app logs in-distribution then
shifted MNIST-1D traffic; the drift report flags only the shifted window, the control chart
marks the shift, an alert reaches a local webhook receiver and the canary is rolled back.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np

from distillery.data.mnist1d import generate
from distillery.monitoring.check import run_check
from distillery.monitoring.request_log import read_requests
from distillery.storage import Store

from helpers import (
    REFERENCE_SPEC,
    WEBHOOK_ENV,
    WEBHOOK_SOCKET,
    add_students,
    deploy_app,
    free_port,
    replicas,
    tiny_overrides,
    tiny_spec,
)

TOKEN = "monitor-token"
ROWS_PER_REQUEST = 8
BUCKET_S = 1.0


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.bodies.append(json.loads(self.rfile.read(
                    int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(WEBHOOK_SOCKET.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = WEBHOOK_SOCKET  # bound and listening since conftest's import
        threading.Thread(target=self.serve_forever, daemon=True).start()


def stream(http: httpx.Client, x: np.ndarray, seconds: float) -> list[int]:
    """Requests of ROWS_PER_REQUEST rows from `x`, 8 at a time, for `seconds`; HTTP statuses."""
    deadline, statuses, start = time.monotonic() + seconds, [], 0

    def send(i: int) -> int:
        rows = x[(i * ROWS_PER_REQUEST) % (len(x) - ROWS_PER_REQUEST):][:ROWS_PER_REQUEST]
        return http.post("/v1/models/mnist1d:predict", json={"instances": rows.tolist(),
                                                             "user_id": i}).status_code

    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            statuses += pool.map(send, range(start, start + 32))
            start += 32
    return statuses


def exported_metrics(wanted: set[str], replicas: list[str], timeout: float = 30) -> set[str]:
    """Names of the distillery_* metrics of some Serve replicas on this node's Prometheus
    endpoint, once all of `wanted` are there or `timeout` passed (Ray exports every few seconds,
    each metric once the router has first set it; routers of earlier tests export theirs)."""
    import ray

    url = f"http://127.0.0.1:{ray._private.worker.global_worker.node.metrics_export_port}/metrics"
    deadline, names = time.monotonic() + timeout, set()
    while time.monotonic() < deadline and not wanted <= names:
        text = httpx.get(url, timeout=10).text
        names = {name for name, labels in re.findall(
            r"^(?:ray_)?(distillery_[a-z_]+?)(?:_bucket|_count|_sum|_total)?\{([^}]*)\}",
            text, re.M) if any(f'replica="{r}"' in labels for r in replicas)}
        time.sleep(1)
    return names


def test_shifted_traffic_is_flagged_charted_alerted_and_rolls_the_canary_back(cli,
        store_copy, local_ray, monkeypatch):
    from ray import serve

    monkeypatch.setenv("DISTILLERY_ADMIN_TOKEN", TOKEN)
    add_students(store_copy)
    receiver = Receiver()
    overrides = [
        "serve.student=good", "serve.rollout.steps=[50,100]",
        "serve.rollout.min_requests=1000000",  # the canary stays at 50%
        "serve.rollout.interval_s=0.5", "serve.rollout.failure_threshold=1",
        "serve.rollout.shadow_fraction=0.2", "serve.rollout.gates.min_agreement=null",
        "monitor.request_log.flush_seconds=0.25", "monitor.check_interval_s=2",
        "monitor.window_s=4", "monitor.drift.reference_rows=1000",
        f"monitor.control.bucket_seconds={BUCKET_S}", "monitor.control.reference_buckets=8",
        "monitor.control.min_bucket_rows=50",
        f"monitor.alerts.webhook={{url_env: {WEBHOOK_ENV}, retries: 0}}"]
    spec = tiny_spec(store_copy, *overrides)
    fresh = generate(4000, seed=7, train_split=1.0)["x"].astype(np.float32)  # unseen, same law
    shifted = generate(4000, seed=8, train_split=1.0)["x"].astype(np.float32)
    shifted = shifted + np.random.default_rng(0).normal(0, 1.0, shifted.shape).astype(np.float32)
    port = free_port()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deploy_app(spec, port, TOKEN)
        t0 = datetime.now(timezone.utc)
        statuses = stream(http, fresh, 12.0)
        status = http.get("/admin/rollout", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert status["status"] == "running", status["decisions"][-3:]  # no false alarm
        assert receiver.bodies == []
        t1 = datetime.now(timezone.utc)
        # shifted traffic goes on, as in production, until the gate acts: a loaded machine
        # sends fewer rows per window and its checks take longer, so this is not a fixed time
        deadline = time.monotonic() + 60
        while status["status"] == "running" and time.monotonic() < deadline:
            statuses += stream(http, shifted, 2.0)
            status = http.get("/admin/rollout",
                              headers={"Authorization": f"Bearer {TOKEN}"}).json()
        t2 = datetime.now(timezone.utc)
        assert set(statuses) == {200}  # monitoring never failed a request
        assert (status["status"], status["weight"]) == ("rolled_back", 0), (
            status["decisions"][-3:], status.get("monitor"))
        assert "alerts" in status["decisions"][-1]["reason"]
        assert receiver.bodies and receiver.bodies[0]["window"]
        # the router's and the coordinator's custom metrics reach Ray's Prometheus endpoint
        # (what the dashboard reads)
        wanted = {"distillery_requests", "distillery_request_latency_ms",
                  "distillery_rollout_weight", "distillery_request_log_rows",
                  "distillery_active_alerts"}
        assert wanted <= exported_metrics(wanted, [*replicas("Router"),
                                                   *replicas("RolloutCoordinator")])
    finally:
        serve.shutdown()

    store = Store(str(store_copy))
    logged = read_requests(store, t0, t2)
    assert logged.num_rows >= ROWS_PER_REQUEST * len(statuses) * 0.95  # flushed, not lost
    quiet = run_check(spec, t0, t1, send_alerts=False)
    assert quiet.drift["dataset_drift"] is False and quiet.alerts == []
    # the shifted window, as a user asks for it
    sets = [a for item in tiny_overrides(store_copy, *overrides) for a in ("--set", item)]
    result = cli("drift", "--config", str(REFERENCE_SPEC), *sets, "--from", t1.isoformat(),
                 "--to", t2.isoformat(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loud = json.loads(result.stdout)
    assert loud["drift"]["dataset_drift"] is True and loud["alerts"]
    assert store.exists("monitor", "reports", loud["window"], "report.html")
    assert loud["window"] in {b["window"] for b in receiver.bodies}  # the CLI alerted too
    # over the whole run, the confidence chart marks the shift within 5 buckets of it (4-sigma
    # limits from 8 reference buckets; a loaded machine sends fewer rows per bucket)
    whole = run_check(spec, t0, t2, drift=False, send_alerts=False)
    chart = whole.charts["confidence"]
    first = chart.first_violation_after(chart.reference)
    assert first is not None, chart
    flagged = chart.start[first].astype("datetime64[us]").astype(np.int64) / 1e6  # unix s
    assert t1.timestamp() - BUCKET_S <= flagged <= t1.timestamp() + 5 * BUCKET_S, (flagged, t1)
