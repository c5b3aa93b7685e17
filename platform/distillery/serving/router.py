"""The ingress: HTTP API (V1 and Open Inference Protocol V2), routing, shadowing, A/B feedback,
the rollout controller and the admin API.

One replica: it holds the rollout state (persisted in the store at every change) and applies a
new weight to the next request, so traffic moves without restarting any replica. The controller
is a task on the replica's event loop that calls `rollout.decide` every `interval_s`.

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at
runtime, and Serve's ingress wrapper does not resolve string ones (`request` became a query
parameter, 422).
"""


import asyncio
import json
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Gauge, Histogram

from distillery.config import ServeSpec
from distillery.serving import rollout
from distillery.serving.admin import authorize
from distillery.serving.routing import sticky_arm, two_proportion_ztest
from distillery.serving.schema import (
    Limits,
    RequestError,
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
ARMS = ("teacher", "student")
LATENCY_WINDOW = 5000  # student latencies kept for the p99 gate
FEEDBACK_WINDOW = 100_000  # request ids remembered for POST /v1/feedback


@dataclass
class Window:
    """What the controller measures, since the current step began."""

    requests: int = 0
    student_requests: int = 0
    student_errors: int = 0
    student_latency_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    agreements: int = 0
    pairs: int = 0

    def measurement(self) -> rollout.Measurement:
        p99 = rollout.percentile(list(self.student_latency_ms), 99) if (
            self.student_latency_ms) else None
        return rollout.Measurement(self.requests, self.student_requests, self.student_errors,
                                   p99, self.agreements, self.pairs)


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class Router:
    async def __init__(self, teacher: DeploymentHandle, student: DeploymentHandle,
                       cards: dict[str, dict], versions: dict[str, str], endpoint: str,
                       store_root: str, spec: ServeSpec, admin_digest: str | None):
        self.handles = {"teacher": teacher, "student": student}
        self.cards, self.versions, self.endpoint = cards, versions, endpoint
        self.spec, self.rollout_spec, self.admin_digest = spec, spec.rollout, admin_digest
        self.limits = Limits(cards["teacher"]["num_features"], spec.max_instances,
                             spec.max_body_bytes)
        self.store = Store(store_root)
        self.window = Window()
        self.arm_of: OrderedDict[str, str] = OrderedDict()  # request id -> arm, for feedback
        self.feedback = {arm: [0, 0] for arm in ARMS}  # arm -> [successes, outcomes]
        self.shadow_tasks: set[asyncio.Task] = set()
        self.save_lock = asyncio.Lock()
        self.requests_total = Counter("distillery_requests", "requests answered, by model",
                                      tag_keys=("model",))
        self.errors_total = Counter("distillery_request_errors", "failed requests: 4xx client "
                                    "errors and model errors, by model", tag_keys=("model",
                                                                                   "kind"))
        self.latency = Histogram("distillery_request_latency_ms", "model call latency",
                                 boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
                                 tag_keys=("model",))
        self.weight_gauge = Gauge("distillery_rollout_weight", "percent of routed traffic the "
                                  "student gets")
        state, note = await asyncio.to_thread(rollout.load_state, self.store, self.rollout_spec,
                                              versions["student"], time.time())
        logger.info("rollout: %s", note)
        self.state = state
        self.weight_gauge.set(state["weight"])
        self.controller = asyncio.get_running_loop().create_task(self._control())

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

    @api.get("/v1/models/{name}")
    async def v1_model(self, name: str) -> JSONResponse:
        if name == self.endpoint:
            return JSONResponse({"name": name, "models": {a: self.versions[a] for a in ARMS},
                                 "student_weight": self.state["weight"],
                                 "mode": self.rollout_spec.mode})
        if name not in ARMS:
            return JSONResponse(v1_error(self._unknown(name)), 404)
        return JSONResponse(v1_metadata(name, self.cards[name], self.versions[name]))

    @api.get("/v2/models/{name}")
    async def v2_model(self, name: str) -> JSONResponse:
        arm = "teacher" if name == self.endpoint else name
        if arm not in ARMS:
            return JSONResponse(v2_error(self._unknown(name)), 404)
        return JSONResponse(v2_metadata(name, self.cards[arm], self.versions[arm]))

    @api.get("/v2/models/{name}/ready")
    async def v2_model_ready(self, name: str) -> JSONResponse:
        if name not in (*ARMS, self.endpoint):
            return JSONResponse(v2_error(self._unknown(name)), 404)
        return JSONResponse({"name": name, "ready": True})

    # ------------------------------------------------------------ inference

    @api.post("/v1/models/{name}:predict")
    async def v1_predict(self, name: str, request: Request) -> JSONResponse:
        return await self._infer(name, request, parse_v1, v1_prediction, v1_error)

    @api.post("/v2/models/{name}/infer")
    async def v2_infer(self, name: str, request: Request) -> JSONResponse:
        return await self._infer(name, request, parse_v2, v2_prediction, v2_error)

    async def _infer(self, name: str, request: Request, parse, render, render_error
                     ) -> JSONResponse:
        try:
            if name not in (*ARMS, self.endpoint):
                raise self._unknown(name)
            body = await self._body(request)
            x, key = parse(body, self.limits)
        except RequestError as err:
            known = name if name in (*ARMS, self.endpoint) else "unknown"  # bounded tags
            self.errors_total.inc(tags={"model": known, "kind": "client"})
            return JSONResponse(render_error(err), err.status)
        request_id = uuid.uuid4().hex
        try:
            if name == self.endpoint:
                key = request.headers.get(self.rollout_spec.sticky_header) or key or request_id
                arm, probs = await self._routed(x, key)
                self._remember(request_id, arm)
            else:
                arm, probs = name, await self._call(name, x)
        except Exception as err:  # the model failed, not the client: 5xx, no stack trace
            logger.warning("%s failed: %s", name, err)
            failed = RequestError(503, "model_error", f"{name} failed; retry")
            return JSONResponse(render_error(failed), 503)
        return JSONResponse(render(probs, arm, self.versions[arm], request_id))

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise RequestError(413, "body_too_large", f"body of {declared} bytes exceeds the "
                                                      f"limit of {self.limits.max_body_bytes}")
        return await request.body()

    async def _routed(self, x: np.ndarray, key: str) -> tuple[str, np.ndarray]:
        """The arm the rollout picks for this key; a failing student falls back to the
        teacher (the failure counts against the student's gates, the client never sees it)."""
        self.window.requests += 1
        arm = sticky_arm(key, self.state["weight"])
        if arm == "student":
            self.window.student_requests += 1
            try:
                probs = await self._call("student", x)
            except Exception as err:
                self.window.student_errors += 1
                self.errors_total.inc(tags={"model": "student", "kind": "model"})
                logger.warning("student failed, teacher answers: %s", err)
                arm, probs = "teacher", await self._call("teacher", x)
        else:
            probs = await self._call("teacher", x)
        if random.random() < self.rollout_spec.shadow_fraction:
            other = "teacher" if arm == "student" else "student"
            task = asyncio.get_running_loop().create_task(self._mirror(other, x, probs))
            self.shadow_tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self.shadow_tasks.discard)
        return arm, probs

    async def _call(self, arm: str, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        probs = await self.handles[arm].predict.remote(x)
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.requests_total.inc(tags={"model": arm})
        self.latency.observe(elapsed_ms, tags={"model": arm})
        if arm == "student":
            self.window.student_latency_ms.append(elapsed_ms)
        return probs

    async def _mirror(self, arm: str, x: np.ndarray, answered: np.ndarray) -> None:
        """The other model on the same rows, after the response went out; the pair's top-1
        agreement feeds the agreement gate."""
        window = self.window
        try:
            probs = await self._call(arm, x)
        except Exception as err:
            if arm == "student":
                window.student_errors += 1
            logger.warning("shadow call to %s failed: %s", arm, err)
            return
        window.pairs += len(x)
        window.agreements += int((probs.argmax(1) == answered.argmax(1)).sum())

    def _remember(self, request_id: str, arm: str) -> None:
        self.arm_of[request_id] = arm
        if len(self.arm_of) > FEEDBACK_WINDOW:
            self.arm_of.popitem(last=False)

    def _unknown(self, name: str) -> RequestError:
        return RequestError(404, "unknown_model", f"no model {name!r}; valid: teacher, student, "
                                                  f"{self.endpoint} (routed)")

    # ------------------------------------------------------------ A/B feedback

    @api.post("/v1/feedback")
    async def feedback_post(self, request: Request) -> JSONResponse:
        """`{"request_id": "...", "success": true|false}` for a routed response."""
        try:
            payload = json.loads(await self._body(request))
        except (RequestError, ValueError):
            payload = None
        if (not isinstance(payload, dict) or not isinstance(payload.get("success"), bool)
                or not isinstance(payload.get("request_id"), str)):
            err = RequestError(400, "invalid_request", 'body must be {"request_id": str, '
                                                       '"success": bool}')
            return JSONResponse(v1_error(err), 400)
        arm = self.arm_of.pop(payload["request_id"], None)
        if arm is None:
            err = RequestError(404, "unknown_request", "no routed response with that "
                                                       "request_id (or feedback already given)")
            return JSONResponse(v1_error(err), 404)
        self.feedback[arm][0] += payload["success"]
        self.feedback[arm][1] += 1
        return JSONResponse({"request_id": payload["request_id"], "model": arm})

    def ab_summary(self) -> dict:
        (s_s, n_s), (s_t, n_t) = self.feedback["student"], self.feedback["teacher"]
        z, p = two_proportion_ztest(s_s, n_s, s_t, n_t)
        return {arm: {"successes": s, "outcomes": n, "rate": s / n if n else None}
                for arm, (s, n) in self.feedback.items()} | {"z": z, "p_value": p}

    # ------------------------------------------------------------ rollout

    async def _control(self) -> None:
        while True:
            await asyncio.sleep(self.rollout_spec.interval_s)
            try:
                new, decision = rollout.decide(self.state, self.rollout_spec,
                                               self.window.measurement(), time.time())
                logger.info("rollout decision: %s", json.dumps(decision))
                await self._apply(new)
            except Exception:  # the controller must outlive one bad tick; the state is kept
                logger.exception("rollout controller tick failed")

    async def _apply(self, new: dict) -> None:
        old, self.state = self.state, new
        if new["step_started"] != old["step_started"]:
            self.window = Window()
        self.weight_gauge.set(new["weight"])
        if new != old:
            # writes in order, and the last one holds the newest state
            async with self.save_lock:
                await asyncio.to_thread(rollout.save_state, self.store, self.state)

    def status(self) -> dict:
        state = {k: v for k, v in self.state.items() if k != "decisions"}
        return {**state, "endpoint": self.endpoint, "models": self.versions,
                "gates": [vars(c) for c in rollout.check_gates(
                    self.rollout_spec.gates, self.window.measurement())],
                "requests_in_step": self.window.requests, "ab": self.ab_summary(),
                "decisions": self.state["decisions"][-10:]}

    @api.get("/admin/rollout")
    async def admin_status(self, request: Request) -> JSONResponse:
        denied = authorize(request.headers.get("authorization"), self.admin_digest)
        if denied:
            return JSONResponse(v1_error(RequestError(denied[0], "unauthorized", denied[1])),
                                denied[0])
        return JSONResponse(self.status())

    @api.post("/admin/rollout/{action}")
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
