"""Causal LMs over HTTP: `POST /v1/models/{name}:generate`, `GET /v1/models`, `GET /healthz`.

`build_lm_app(store_root, {name: parts})` binds one LMServer deployment per model into the
ingress. Every check on a request happens here, at the edge: the body by
`lm_schema.parse_generate`, then the prompt's length in tokens (encoded by the model's own
replica) against the model's context, read from its stored config when the app is built. Bad
input gets a 4xx in the V1 error shape; only a failing model gets a 503. Replicas load their
models from the store, so they can run on any node.

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at
runtime (see router.py).
"""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.exceptions import HTTPException
from transformers import AutoConfig

from distillery.lm.artifacts import HF_DIR
from distillery.serving.lm_deployments import LMServer
from distillery.serving.lm_schema import (
    GENERATE_REQUEST,
    GENERATE_RESPONSE,
    MODELS_RESPONSE,
    GenerateLimits,
    check_prompt_length,
    parse_generate,
)
from distillery.serving.schema import (
    V1_ERROR,
    RequestError,
    check_body_size,
    framework_error,
    openapi_body,
    openapi_responses,
    v1_error,
)
from distillery.storage import Store
from distillery.store_layout import has_card, read_card

logger = logging.getLogger("ray.serve")
api = FastAPI(title="distillery-lm")
LM_APP_NAME = "distillery-lm"
SERVER_CPUS = 0.5  # per LMServer replica: a decode loop runs on one thread
INGRESS_CPUS = 0.1  # parses JSON and waits on the servers
GENERATE_ERRORS = {400: "invalid body, or a prompt too long for the model", 404: "no such model",
                   413: "body too large", 503: "the model failed; retry"}


@api.exception_handler(HTTPException)
async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse(v1_error(framework_error(exc.status_code, str(exc.detail))),
                        exc.status_code, headers=exc.headers)


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class LMIngress:
    def __init__(self, servers: dict[str, DeploymentHandle], cards: dict[str, dict],
                 contexts: dict[str, int], limits: GenerateLimits):
        self.servers, self.cards, self.contexts, self.limits = servers, cards, contexts, limits

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "models": sorted(self.servers)}

    @api.get("/v1/models", responses=openapi_responses(MODELS_RESPONSE, V1_ERROR, {}))
    async def models(self) -> dict:
        return {"models": [{"name": name, "params": card["params"],
                            "vocab_size": card["vocab_size"], "context": self.contexts[name],
                            "created": card["created"]}
                           for name, card in sorted(self.cards.items())]}

    @api.post("/v1/models/{name}:generate", openapi_extra=openapi_body(GENERATE_REQUEST),
              responses=openapi_responses(GENERATE_RESPONSE, V1_ERROR, GENERATE_ERRORS))
    async def generate(self, name: str, request: Request) -> JSONResponse:
        try:
            if name not in self.servers:
                raise RequestError(404, "unknown_model", f"no model {name!r}; valid: "
                                                         f"{', '.join(sorted(self.servers))}")
            check_body_size(request.headers.get("content-length"), self.limits.max_body_bytes)
            ask = parse_generate(await request.body(), self.limits)
            server = self.servers[name]
            prompt_ids = await self._model_call(name, server.encode.remote(ask.prompt))
            check_prompt_length(len(prompt_ids), ask.max_new_tokens, self.contexts[name],
                                self.limits.max_prompt_tokens)
            answer = await self._model_call(name, server.generate.remote(
                prompt_ids, ask.max_new_tokens, ask.temperature, ask.seed))
        except RequestError as err:
            return JSONResponse(v1_error(err), err.status)
        return JSONResponse({"model": name, "text": answer["text"],
                             "prompt_tokens": len(prompt_ids),
                             "generated_tokens": answer["generated_tokens"],
                             "finish_reason": answer["finish_reason"]})

    async def _model_call(self, name: str, response: DeploymentResponse):
        try:
            return await response
        except Exception as err:  # the model failed, not the client: 503, no stack trace
            logger.warning("%s failed: %s", name, err)
            raise RequestError(503, "model_error", f"{name} failed; retry") from None


def model_context(store: Store, parts: tuple[str, ...]) -> int:
    """The most positions the stored model attends to (GPT-2's n_positions): prompt and
    continuation together. Read from its saved config, with the architecture's defaults."""
    config = store.read_json(*parts, HF_DIR, "config.json")
    return AutoConfig.for_model(**config).max_position_embeddings


def build_lm_app(store_root: str, models: dict[str, tuple[str, ...]], *,
                 max_new_tokens: int = 64, max_prompt_tokens: int | None = None,
                 num_replicas: int = 1, max_body_bytes: int = 1_000_000) -> Application:
    """The Serve application of `models` ({name in the URL: store parts of a `save_lm`
    model}): one LMServer deployment per model with `num_replicas` replicas, behind the
    ingress. A request may ask for up to `max_new_tokens`; its prompt may have up to
    min(context - max_new_tokens of the request, `max_prompt_tokens`) tokens."""
    store = Store(store_root)
    cards, contexts = {}, {}
    for name, parts in models.items():
        if not has_card(store, parts):
            raise FileNotFoundError(f"no model {name!r} at {store.uri(*parts)}")
        cards[name] = read_card(store, parts)
        if cards[name].get("kind") != "causal_lm":  # classifier cards have no kind
            raise ValueError(f"{name!r} at {store.uri(*parts)} is not a causal LM (its "
                             "card.json has no kind: causal_lm); save it with lm.save_lm")
        contexts[name] = model_context(store, parts)
        if max_new_tokens >= contexts[name]:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt "
                             f"in the context of {name!r}, {contexts[name]} tokens; use at "
                             f"most {contexts[name] - 1}")
    # replicas may run elsewhere: they get the store as an absolute path or URI
    servers = {name: LMServer.options(name=name, num_replicas=num_replicas,
                                      ray_actor_options={"num_cpus": SERVER_CPUS})
               .bind(store.root, tuple(parts)) for name, parts in models.items()}
    limits = GenerateLimits(max_new_tokens, max_prompt_tokens, max_body_bytes)
    return LMIngress.options(ray_actor_options={"num_cpus": INGRESS_CPUS}).bind(
        servers, cards, contexts, limits)
