"""The ingress: HTTP API (V1 and Open Inference Protocol V2), routing, shadowing, A/B feedback
and the admin API.

It holds teacher and student in-process (topology `colocated`) or calls their deployments
(`separate`), and scales out (`serve.router_replicas`): the rollout's state, its decision loop,
the A/B outcomes and the scheduled monitoring check live once per app in the coordinator
(coordinator.py). Each replica routes by the state it last took from the coordinator and
reports what it measured every `interval_s / 2` (`_sync_loop`), so traffic moves without
restarting any replica; it writes its own request log (`request_monitor.RequestMonitor`,
flushed in a thread) and signs its request ids with the app's key, so that feedback on an
answer may reach any replica.

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
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram
from starlette.exceptions import HTTPException

from distillery.config import PipelineSpec, ServeSpec
from distillery.monitoring.request_log import Entry
from distillery.serving import binary, rollout
from distillery.serving.admin import authorize
from distillery.serving.controller import Window
from distillery.serving.deployments import ModelSource
from distillery.serving.feedback import Tokens
from distillery.serving.request_monitor import RequestMonitor
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
    parse_v1_text,
    parse_v2,
    parse_v2_text,
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


@dataclass(frozen=True)
class Protocol:
    parse: object  # body, limits, binary header length -> schema.Parsed
    render: object
    render_error: object
    id_is_request_id: bool  # V2 echoes the client's `id`; V1's `user_id` is a sticky key


V1 = Protocol(parse_v1, v1_prediction, v1_error, id_is_request_id=False)
V2 = Protocol(parse_v2, v2_prediction, v2_error, id_is_request_id=True)
# a text model's requests carry strings; its replicas tokenize them
V1_TEXT = dataclasses.replace(V1, parse=parse_v1_text)
V2_TEXT = dataclasses.replace(V2, parse=parse_v2_text)


def _predictor(model: DeploymentHandle | ModelSource):
    """rows -> awaitable (B, C) probabilities: the model in this process (topology
    `colocated`), or a call to its deployment (`separate`)."""
    if isinstance(model, ModelSource):
        return model.load().predict
    return model.predict.remote


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class Router:
    async def __init__(self, teacher: DeploymentHandle | ModelSource,
                       student: DeploymentHandle | ModelSource, coordinator: DeploymentHandle,
                       cards: dict[str, dict], versions: dict[str, str],
                       pipeline: PipelineSpec, admin_digest: str | None, feedback_key: bytes):
        spec = pipeline.serve or ServeSpec()
        self.rollout, self.coordinator = spec.rollout, coordinator
        self.predict = {arm: _predictor(model) for arm, model in zip(ARMS, (teacher, student),
                                                                     strict=True)}
        self.cards, self.versions, self.endpoint = cards, versions, pipeline.name
        self.admin_digest = admin_digest
        self.fallback_to_teacher = spec.fallback_to_teacher
        self.limits = Limits(cards["teacher"]["num_features"], spec.max_instances,
                             spec.max_body_bytes)
        self.v1, self.v2 = (V1_TEXT, V2_TEXT) if "tokenizer" in cards["teacher"] else (V1, V2)
        store = Store(pipeline.store)
        self.monitor = RequestMonitor(pipeline, store)
        self.tokens = Tokens(feedback_key)  # request ids, signed: feedback on any replica
        self.shadow_tasks: set[asyncio.Task] = set()
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
        self.window = Window()  # measured since the last report to the coordinator
        self.state = await coordinator.sync.remote(None, None)  # weight, status, step_started
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._sync_loop()), *self.monitor.start(loop)]

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
        return {"name": "distillery", "version": "2", "extensions": [binary.EXTENSION]}

    @api.get("/v1/models/{name}", responses=openapi_responses(ANY, V1_ERROR, UNKNOWN))
    async def v1_model(self, name: str) -> JSONResponse:
        if name == self.endpoint:
            return JSONResponse({"name": name, "models": {a: self.versions[a] for a in ARMS},
                                 "student_weight": self.state["weight"],
                                 "mode": self.rollout.mode})
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
        return await self._infer(name, request, self.v1)

    @api.post("/v2/models/{name}/infer", openapi_extra=openapi_body(V2_REQUEST),
              responses=openapi_responses(V2_PREDICTION, V2_ERROR, INFER_ERRORS))
    async def v2_infer(self, name: str, request: Request) -> JSONResponse:
        return await self._infer(name, request, self.v2)

    async def _infer(self, name: str, request: Request, protocol: Protocol) -> JSONResponse:
        try:
            if name not in (*ARMS, self.endpoint):
                raise self._unknown(name)
            body = await self._body(request)
            x, ident, outputs = protocol.parse(body, self.limits,
                                               request.headers.get(binary.HEADER))
        except RequestError as err:
            known = name if name in (*ARMS, self.endpoint) else "unknown"  # bounded tags
            self.errors_total.inc(tags={"model": known, "kind": "client"})
            return JSONResponse(protocol.render_error(err), err.status)
        # ours, unique: it keys feedback and the request log; V2 echoes the client's own id
        number, received = self.tokens.number(), time.time()
        routed = name == self.endpoint
        try:
            if routed:
                key = (request.headers.get(self.rollout.sticky_header)
                       or (None if protocol.id_is_request_id else ident) or number)
                arm, probs, latency_ms = await self._routed(x, key)
            else:
                arm = name
                probs, latency_ms = await self._call(name, x)
        except Exception as err:  # the model failed, not the client: 5xx, no stack trace
            logger.warning("%s failed: %s", name, err)
            failed = RequestError(503, "model_error", f"{name} failed; retry")
            return JSONResponse(protocol.render_error(failed), 503)
        request_id = self.tokens.issue(number, arm if routed else None)
        entry = Entry(received, request_id, name, arm, self.versions[arm], x, probs, latency_ms)
        if routed and random.random() < self.rollout.shadow_fraction:
            task = asyncio.get_running_loop().create_task(self._mirror(entry))
            self.shadow_tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self.shadow_tasks.discard)
        else:
            self.monitor.log(entry)
        answer_id = (ident if protocol.id_is_request_id else None) or request_id
        answer = protocol.render(probs, arm, self.versions[arm], answer_id,
                                 self.cards[arm].get("class_names"))
        if outputs is None:
            return JSONResponse(answer)
        content, headers = outputs.render(answer)  # V2: the outputs asked for, maybe binary
        return Response(content, headers=headers)

    async def _body(self, request: Request) -> bytes:
        check_body_size(request.headers.get("content-length"), self.limits.max_body_bytes)
        return await request.body()

    async def _routed(self, x: np.ndarray, key: str) -> tuple[str, np.ndarray, float]:
        """The arm the rollout picks for this key, its probabilities and latency. A failing
        student counts against its gates; with `serve.fallback_to_teacher` the teacher answers
        instead (the client sees `model: teacher`, no error), otherwise the failure propagates
        (503)."""
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
        return arm, probs, latency_ms

    async def _call(self, arm: str, x: np.ndarray) -> tuple[np.ndarray, float]:
        """(B, C) probabilities and the call's latency in ms; a student failure is counted
        against the student's error-rate gate, answer or shadow alike."""
        start = time.perf_counter()
        if arm == "student":
            self.window.student_calls += 1
        try:
            probs = await self.predict[arm](x)
        except Exception:
            self.errors_total.inc(tags={"model": arm, "kind": "model"})
            if arm == "student":  # the window of now: a report may have gone out meanwhile
                self.window.student_errors += 1
            raise
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.requests_total.inc(tags={"model": arm})
        self.latency.observe(elapsed_ms, tags={"model": arm})
        if arm == "student":
            self.window.student_latency_ms.append(elapsed_ms)
        return probs, elapsed_ms

    async def _mirror(self, entry: Entry) -> None:
        """The other model on the same rows, after the response went out; the pair's top-1
        agreement feeds the agreement gate and the request log."""
        other = "teacher" if entry.model == "student" else "student"
        try:
            probs, _ = await self._call(other, entry.inputs)
        except Exception as err:
            logger.warning("shadow call to %s failed: %s", other, err)
            self.monitor.log(entry)
            return
        self.window.pairs += len(probs)
        self.window.agreements += int((probs.argmax(1) == entry.probs.argmax(1)).sum())
        self.monitor.log(dataclasses.replace(entry, shadow_probs=probs))

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
        arm = self.tokens.verify(payload["request_id"])
        if arm is None or not await self.coordinator.redeem.remote(
                payload["request_id"], arm, payload["success"]):
            err = RequestError(404, "unknown_request", "no routed response with that "
                                                       "request_id (or feedback already given)")
            return JSONResponse(v1_error(err), 404)
        return JSONResponse({"request_id": payload["request_id"], "model": arm})

    # ------------------------------------------------------------ lifecycle and admin

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rollout.interval_s / 2)
            await self._sync()

    async def _sync(self) -> None:
        """Report the window to the coordinator and take the state it returns; when the
        coordinator cannot be reached, the counts wait for the next report."""
        window, self.window = self.window, Window()
        try:
            self.state = await self.coordinator.sync.remote(window.report(),
                                                            self.state["step_started"])
        except Exception as err:  # the replica must outlive a failed report
            self.window.add(window.report())
            logger.warning("rollout: report to the coordinator failed (%s); retrying", err)

    async def __del__(self) -> None:
        """Serve calls this when the replica stops (a redeploy, `serve shutdown`, scaling
        down): what is buffered goes to the store, so only a crash loses a buffer."""
        for task in self.tasks:
            task.cancel()
        await self.monitor.flush()

    async def status(self, rollout_status: dict | None = None) -> dict:
        """The coordinator's status (or `rollout_status`, one it just returned), with this
        replica's request log."""
        status = rollout_status or await self.coordinator.status.remote()
        decisions = status.pop("decisions")
        status["monitor"]["request_log"] = self.monitor.status()
        return {**status, "endpoint": self.endpoint, "models": self.versions,
                "decisions": decisions}

    @api.get("/admin/rollout", responses=openapi_responses(ANY, V1_ERROR, ADMIN_ERRORS))
    async def admin_status(self, request: Request) -> JSONResponse:
        denied = authorize(request.headers.get("authorization"), self.admin_digest)
        if denied:
            return JSONResponse(v1_error(RequestError(denied[0], "unauthorized", denied[1])),
                                denied[0])
        return JSONResponse(await self.status())

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
        result = await self.coordinator.act.remote(action)
        if "error" in result:
            return JSONResponse(v1_error(RequestError(409, "invalid_action", result["error"])),
                                409)
        await self._sync()  # this replica routes by the new state at once, the others soon
        return JSONResponse(await self.status(result))
