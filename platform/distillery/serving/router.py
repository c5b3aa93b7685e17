"""The ingress: HTTP API (V1 and Open Inference Protocol V2), routing, shadowing, A/B feedback,
the rollout controller, the request log, the scheduled monitoring check and the admin API.

One replica: it holds the rollout state (persisted in the store at every change) and applies a
new weight to the next request, so traffic moves without restarting any replica. The controller
is a task on the replica's event loop that calls `rollout.decide` every `interval_s`. Two more
tasks flush the request log (writes run in a thread) and run the monitoring check every
`monitor.check_interval_s`; the latest check's alerts feed the rollout's `alerts` gate.

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at
runtime, and Serve's ingress wrapper does not resolve string ones (`request` became a query
parameter, 422).
"""


import asyncio
import dataclasses
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Gauge, Histogram
from starlette.exceptions import HTTPException

from distillery.config import PipelineSpec, ServeSpec
from distillery.monitoring.request_log import Entry, RequestLog
from distillery.serving import rollout
from distillery.serving.admin import authorize
from distillery.serving.feedback import Feedback
from distillery.serving.heap import freeze_startup_heap
from distillery.serving.routing import ARMS, sticky_arm
from distillery.serving.schema import (
    FEEDBACK_REQUEST,
    V1_ERROR,
    V1_PREDICTION,
    V1_REQUEST,
    V2_ERROR,
    V2_PREDICTION,
    V2_REQUEST,
    Limits,
    RequestError,
    check_body_size,
    framework_error,
    openapi_body,
    openapi_responses,
    parse_v1,
    parse_v2,
    v1_error,
    v1_metadata,
    v1_prediction,
    v2_error,
    v2_metadata,
    v2_prediction,
)
from distillery.storage import Store

logger = logging.getLogger("ray.serve")
api = FastAPI(title="distillery")
LATENCY_WINDOW = 5000  # student latencies kept for the p99 gate
ANY = {"type": "object"}
UNKNOWN = {404: "no such model"}
INFER_ERRORS = {400: "invalid body", 404: "no such model", 413: "body or batch too large",
                503: "the model failed; retry"}
ADMIN_ERRORS = {401: "missing or invalid token", 403: "admin API disabled"}


@api.exception_handler(HTTPException)
async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """FastAPI's own errors (no route for the path, a method the route lacks) in the protocols'
    error shape, not FastAPI's `{"detail": ...}`."""
    render = v2_error if request.url.path.startswith("/v2") else v1_error
    return JSONResponse(render(framework_error(exc.status_code, str(exc.detail))),
                        exc.status_code, headers=exc.headers)


@dataclass
class Window:
    """What the controller measures, since the current step began."""

    requests: int = 0
    student_calls: int = 0  # answers and shadow calls
    student_errors: int = 0
    student_latency_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    agreements: int = 0
    pairs: int = 0

    def measurement(self, alerts: int | None, alerts_gate: bool) -> rollout.Measurement:
        p99 = rollout.percentile(list(self.student_latency_ms), 99) if (
            self.student_latency_ms) else None
        return rollout.Measurement(self.requests, self.student_calls, self.student_errors,
                                   p99, self.agreements, self.pairs, alerts, alerts_gate)


@dataclass(frozen=True)
class Protocol:
    parse: object  # body, limits -> (x, id); the id is a user key (V1) or request id (V2)
    render: object
    render_error: object
    id_is_request_id: bool  # V2 echoes the client's `id`; V1's `user_id` is a sticky key


V1 = Protocol(parse_v1, v1_prediction, v1_error, id_is_request_id=False)
V2 = Protocol(parse_v2, v2_prediction, v2_error, id_is_request_id=True)


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class Router:
    async def __init__(self, teacher: DeploymentHandle, student: DeploymentHandle,
                       cards: dict[str, dict], versions: dict[str, str], pipeline: PipelineSpec,
                       admin_digest: str | None):
        spec = pipeline.serve or ServeSpec()
        self.handles = {"teacher": teacher, "student": student}
        self.cards, self.versions, self.endpoint = cards, versions, pipeline.name
        self.pipeline, self.monitor = pipeline, pipeline.monitor
        self.rollout_spec, self.admin_digest = spec.rollout, admin_digest
        self.fallback_to_teacher = spec.fallback_to_teacher
        self.limits = Limits(cards["teacher"]["num_features"], spec.max_instances,
                             spec.max_body_bytes)
        self.store = Store(pipeline.store)
        self.window = Window()
        self.request_log = (RequestLog(self.store, self.monitor.request_log)
                            if self.monitor.request_log.enabled else None)
        self.alerts: list | None = None  # the latest monitoring check's; None: none ran yet
        self.sent: frozenset = frozenset()  # (rule, signal) pairs the webhook already has
        self.last_check: dict | None = None
        self.feedback = Feedback()  # request ids, and the A/B outcomes posted for them
        self.shadow_tasks: set[asyncio.Task] = set()
        self.save_lock = asyncio.Lock()
        self.unsaved = False  # the store refused the latest state; every tick retries
        self.requests_total = Counter("distillery_requests", "requests answered, by model",
                                      tag_keys=("model",))
        self.errors_total = Counter("distillery_request_errors", "failed requests: 4xx client "
                                    "errors and model errors, by model", tag_keys=("model",
                                                                                   "kind"))
        self.latency = Histogram("distillery_request_latency_ms", "model call latency",
                                 boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
                                 tag_keys=("model",))
        self.fallbacks = Counter("distillery_student_fallbacks", "routed requests the teacher "
                                 "answered because the student's call failed")
        self.weight_gauge = Gauge("distillery_rollout_weight", "percent of routed traffic the "
                                  "student gets")
        self.log_rows = Counter("distillery_request_log_rows", "request-log rows, by outcome: "
                                "written, or dropped (buffer full while the store was down)",
                                tag_keys=("outcome",))
        self.alerts_gauge = Gauge("distillery_active_alerts", "alerts of the latest monitoring "
                                  "check")
        self.dropped_reported = 0
        state, note = await asyncio.to_thread(rollout.load_state, self.store, self.rollout_spec,
                                              versions["student"], time.time())
        # an unreadable state is an operator's problem to fix: say so at error level
        (logger.error if "error" in state else logger.info)("rollout: %s", note)
        self.state = state
        self.weight_gauge.set(state["weight"])
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._control())]
        if self.request_log:
            self.tasks.append(loop.create_task(self._flush_loop()))
        if self.monitor.check_interval_s is not None:
            # Evidently takes seconds to import: only a router that runs checks pays for it, and
            # before it reports ready (imported at the first check instead, in a thread, it held
            # that check past the monitoring test's window)
            from distillery.monitoring.check import run_check

            self.tasks.append(loop.create_task(self._monitor_loop(run_check)))
        freeze_startup_heap()  # after Evidently's import, when a check runs here

    # ------------------------------------------------------------ health and metadata

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "rollout": self.state["status"],
                "student_weight": self.state["weight"]}

    @api.get("/v2/health/live")
    async def live(self) -> dict:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(self) -> dict:
        return {"ready": True}

    @api.get("/v2")
    async def server_metadata(self) -> dict:
        return {"name": "distillery", "version": "2", "extensions": []}

    @api.get("/v1/models/{name}", responses=openapi_responses(ANY, V1_ERROR, UNKNOWN))
    async def v1_model(self, name: str) -> JSONResponse:
        if name == self.endpoint:
            return JSONResponse({"name": name, "models": {a: self.versions[a] for a in ARMS},
                                 "student_weight": self.state["weight"],
                                 "mode": self.rollout_spec.mode})
        if name not in ARMS:
            return JSONResponse(v1_error(self._unknown(name)), 404)
        return JSONResponse(v1_metadata(name, self.cards[name], self.versions[name]))

    @api.get("/v2/models/{name}", responses=openapi_responses(ANY, V2_ERROR, UNKNOWN))
    async def v2_model(self, name: str) -> JSONResponse:
        arm = "teacher" if name == self.endpoint else name
        if arm not in ARMS:
            return JSONResponse(v2_error(self._unknown(name)), 404)
        return JSONResponse(v2_metadata(name, self.cards[arm], self.versions[arm]))

    @api.get("/v2/models/{name}/ready", responses=openapi_responses(ANY, V2_ERROR, UNKNOWN))
    async def v2_model_ready(self, name: str) -> JSONResponse:
        if name not in (*ARMS, self.endpoint):
            return JSONResponse(v2_error(self._unknown(name)), 404)
        return JSONResponse({"name": name, "ready": True})

    # ------------------------------------------------------------ inference

    @api.post("/v1/models/{name}:predict", openapi_extra=openapi_body(V1_REQUEST),
              responses=openapi_responses(V1_PREDICTION, V1_ERROR, INFER_ERRORS))
    async def v1_predict(self, name: str, request: Request) -> JSONResponse:
        return await self._infer(name, request, V1)

    @api.post("/v2/models/{name}/infer", openapi_extra=openapi_body(V2_REQUEST),
              responses=openapi_responses(V2_PREDICTION, V2_ERROR, INFER_ERRORS))
    async def v2_infer(self, name: str, request: Request) -> JSONResponse:
        return await self._infer(name, request, V2)

    async def _infer(self, name: str, request: Request, protocol: Protocol) -> JSONResponse:
        try:
            if name not in (*ARMS, self.endpoint):
                raise self._unknown(name)
            body = await self._body(request)
            x, ident = protocol.parse(body, self.limits)
        except RequestError as err:
            known = name if name in (*ARMS, self.endpoint) else "unknown"  # bounded tags
            self.errors_total.inc(tags={"model": known, "kind": "client"})
            return JSONResponse(protocol.render_error(err), err.status)
        # ours, unique: it keys feedback and the request log; V2 echoes the client's own id
        n, request_id = self.feedback.issue()
        answer_id = (ident if protocol.id_is_request_id else None) or request_id
        received = time.time()
        try:
            if name == self.endpoint:
                key = (request.headers.get(self.rollout_spec.sticky_header)
                       or (None if protocol.id_is_request_id else ident) or request_id)
                arm, probs = await self._routed(x, key, request_id, received)
                self.feedback.answered(n, arm)
            else:
                arm = name
                probs, latency_ms = await self._call(name, x)
                self._log(Entry(received, request_id, name, arm, self.versions[arm], x, probs,
                                latency_ms))
        except Exception as err:  # the model failed, not the client: 5xx, no stack trace
            logger.warning("%s failed: %s", name, err)
            failed = RequestError(503, "model_error", f"{name} failed; retry")
            return JSONResponse(protocol.render_error(failed), 503)
        return JSONResponse(protocol.render(probs, arm, self.versions[arm], answer_id))

    async def _body(self, request: Request) -> bytes:
        check_body_size(request.headers.get("content-length"), self.limits.max_body_bytes)
        return await request.body()

    async def _routed(self, x: np.ndarray, key: str, request_id: str,
                      received: float) -> tuple[str, np.ndarray]:
        """The arm the rollout picks for this key. A failing student counts against its
        gates; with `serve.fallback_to_teacher` the teacher answers instead (the client sees
        `model: teacher`, no error), otherwise the failure propagates (503)."""
        self.window.requests += 1
        arm = sticky_arm(key, self.state["weight"])
        if arm == "student":
            try:
                probs, latency_ms = await self._call("student", x)
            except Exception as err:
                if not self.fallback_to_teacher:
                    raise
                logger.warning("student failed, teacher answers: %s", err)
                self.fallbacks.inc()
                arm = "teacher"
                probs, latency_ms = await self._call("teacher", x)
        else:
            probs, latency_ms = await self._call("teacher", x)
        entry = Entry(received, request_id, self.endpoint, arm, self.versions[arm], x, probs,
                      latency_ms)
        if random.random() < self.rollout_spec.shadow_fraction:
            task = asyncio.get_running_loop().create_task(self._mirror(entry))
            self.shadow_tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self.shadow_tasks.discard)
        else:
            self._log(entry)
        return arm, probs

    async def _call(self, arm: str, x: np.ndarray) -> tuple[np.ndarray, float]:
        """(B, C) probabilities and the call's latency in ms; a student failure is counted
        against the student's error-rate gate, answer or shadow alike."""
        window, start = self.window, time.perf_counter()
        if arm == "student":
            window.student_calls += 1
        try:
            probs = await self.handles[arm].predict.remote(x)
        except Exception:
            self.errors_total.inc(tags={"model": arm, "kind": "model"})
            if arm == "student":
                window.student_errors += 1
            raise
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.requests_total.inc(tags={"model": arm})
        self.latency.observe(elapsed_ms, tags={"model": arm})
        if arm == "student":
            window.student_latency_ms.append(elapsed_ms)
        return probs, elapsed_ms

    async def _mirror(self, entry: Entry) -> None:
        """The other model on the same rows, after the response went out; the pair's top-1
        agreement feeds the agreement gate and the request log."""
        window = self.window
        other = "teacher" if entry.model == "student" else "student"
        try:
            probs, _ = await self._call(other, entry.inputs)
        except Exception as err:
            logger.warning("shadow call to %s failed: %s", other, err)
            self._log(entry)
            return
        window.pairs += len(probs)
        window.agreements += int((probs.argmax(1) == entry.probs.argmax(1)).sum())
        self._log(dataclasses.replace(entry, shadow_probs=probs))

    def _log(self, entry: Entry) -> None:
        if self.request_log:
            self.request_log.append(entry)  # a full buffer drops the rows and counts them

    def _unknown(self, name: str) -> RequestError:
        return RequestError(404, "unknown_model", f"no model {name!r}; valid: teacher, student, "
                                                  f"{self.endpoint} (routed)")

    # ------------------------------------------------------------ A/B feedback

    @api.post("/v1/feedback", openapi_extra=openapi_body(FEEDBACK_REQUEST),
              responses=openapi_responses(ANY, V1_ERROR, {
                  400: "invalid body", 404: "no routed response with that id",
                  413: "body too large"}))
    async def feedback_post(self, request: Request) -> JSONResponse:
        """`{"request_id": "...", "success": true|false}` for a routed response."""
        try:
            payload = json.loads(await self._body(request))
        except RequestError as err:  # too large
            return JSONResponse(v1_error(err), err.status)
        except ValueError:
            payload = None
        if (not isinstance(payload, dict) or not isinstance(payload.get("success"), bool)
                or not isinstance(payload.get("request_id"), str)):
            err = RequestError(400, "invalid_request", 'body must be {"request_id": str, '
                                                       '"success": bool}')
            return JSONResponse(v1_error(err), 400)
        arm = self.feedback.redeem(payload["request_id"], payload["success"])
        if arm is None:
            err = RequestError(404, "unknown_request", "no routed response with that "
                                                       "request_id (or feedback already given)")
            return JSONResponse(v1_error(err), 404)
        return JSONResponse({"request_id": payload["request_id"], "model": arm})

    # ------------------------------------------------------------ rollout

    async def _control(self) -> None:
        while True:
            await asyncio.sleep(self.rollout_spec.interval_s)
            try:
                new, decision = rollout.decide(self.state, self.rollout_spec,
                                               self._measurement(), time.time())
                logger.info("rollout decision: %s", json.dumps(decision))
                await self._apply(new)
            except Exception:  # the controller must outlive one bad tick; the state is kept
                logger.exception("rollout controller tick failed")

    def _measurement(self) -> rollout.Measurement:
        # only the scheduled check in this app produces alerts the gate can wait for
        gated = self.monitor.alerts.gate_rollout and self.monitor.check_interval_s is not None
        return self.window.measurement(None if self.alerts is None else len(self.alerts), gated)

    # ------------------------------------------------------------ request log and monitoring

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.monitor.request_log.flush_seconds))
            if self.request_log.due():
                await self._flush()

    async def _flush(self) -> None:
        log = self.request_log
        entries = log.take()
        if entries:
            try:
                written = await asyncio.to_thread(log.write, entries)
                self.log_rows.inc(written, tags={"outcome": "written"})
            except Exception as err:  # the store is down: keep the rows while there is room
                log.give_back(entries)
                logger.warning("request log: write to %s failed (%s); %d rows buffered, %d "
                               "dropped so far", self.store.root, err, log.rows, log.dropped)
        if log.dropped > self.dropped_reported:
            self.log_rows.inc(log.dropped - self.dropped_reported, tags={"outcome": "dropped"})
            self.dropped_reported = log.dropped

    async def _monitor_loop(self, run_check: Callable) -> None:
        while True:
            await asyncio.sleep(self.monitor.check_interval_s)
            end = datetime.now(timezone.utc)
            start = end - timedelta(seconds=self.monitor.window_s)
            try:
                if self.request_log:
                    await self._flush()  # the check reads what is in the store
                result = await asyncio.to_thread(run_check, self.pipeline, start, end,
                                                 already_sent=self.sent)
            except Exception:  # one failed check must not end the schedule
                logger.exception("monitoring check failed")
                continue
            self.alerts, self.last_check = result.alerts, result.status()
            self.sent = result.sent  # a condition pages once, until a check clears it
            self.alerts_gauge.set(len(result.alerts))

    async def __del__(self) -> None:
        """Serve calls this when the replica stops (a redeploy, `serve shutdown`, scaling
        down): what is buffered goes to the store, so only a crash loses a buffer."""
        for task in self.tasks:
            task.cancel()
        if self.request_log:
            await self._flush()

    def _monitor_status(self) -> dict:
        log = self.request_log
        return {"request_log": None if log is None else {
                    "buffered": log.rows, "written": log.written, "dropped": log.dropped},
                "alerts": None if self.alerts is None else [a.to_json() for a in self.alerts],
                "last_check": self.last_check}

    async def _apply(self, new: dict) -> None:
        old, self.state = self.state, new
        if new["step_started"] != old["step_started"]:
            self.window = Window()
        self.weight_gauge.set(new["weight"])
        if new != old or self.unsaved:
            # writes in order, and the last one holds the newest state
            async with self.save_lock:
                try:
                    await asyncio.to_thread(rollout.save_state, self.store, self.state)
                    self.unsaved = False
                except OSError as err:  # the store is down: traffic follows the new state now
                    self.unsaved = True
                    logger.warning("rollout: saving the state to %s failed (%s); retrying "
                                   "every %g s", self.store.root, err,
                                   self.rollout_spec.interval_s)

    def status(self) -> dict:
        state = {k: v for k, v in self.state.items() if k != "decisions"}
        return {**state, "endpoint": self.endpoint, "models": self.versions,
                "gates": [vars(c) for c in rollout.check_gates(
                    self.rollout_spec.gates, self._measurement())],
                "requests_in_step": self.window.requests, "ab": self.feedback.summary(),
                "monitor": self._monitor_status(),
                "decisions": self.state["decisions"][-10:]}

    @api.get("/admin/rollout", responses=openapi_responses(ANY, V1_ERROR, ADMIN_ERRORS))
    async def admin_status(self, request: Request) -> JSONResponse:
        denied = authorize(request.headers.get("authorization"), self.admin_digest)
        if denied:
            return JSONResponse(v1_error(RequestError(denied[0], "unauthorized", denied[1])),
                                denied[0])
        return JSONResponse(self.status())

    @api.post("/admin/rollout/{action}", responses=openapi_responses(ANY, V1_ERROR, {
        **ADMIN_ERRORS, 404: "no such action", 409: "not allowed in this rollout state"}))
    async def admin_action(self, action: str, request: Request) -> JSONResponse:
        denied = authorize(request.headers.get("authorization"), self.admin_digest)
        if denied:
            return JSONResponse(v1_error(RequestError(denied[0], "unauthorized", denied[1])),
                                denied[0])
        if action not in rollout.ACTIONS:
            err = RequestError(404, "unknown_action", f"no action {action!r}; valid: "
                                                      f"{', '.join(rollout.ACTIONS)}")
            return JSONResponse(v1_error(err), 404)
        try:
            new = rollout.operator_action(self.state, action, time.time())
        except ValueError as err:
            return JSONResponse(v1_error(RequestError(409, "invalid_action", str(err))), 409)
        logger.info("rollout operator action: %s", json.dumps(new["decisions"][-1]))
        await self._apply(new)
        return JSONResponse(self.status())
