"""The Serve application: teacher and student deployments bound into the router.

`app_builder(args)` is what `serve run` / `serve deploy` import
(`distillery.serving.app:app_builder`, args `config` and optional `set`); `distillery serve`
calls `serve_pipeline`. Models are resolved from the store on the machine that builds the app;
replicas load them from the store themselves, so they can run on any node.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import astuple

from ray import serve
from ray.serve import Application

from distillery.config import (
    ModelServingSpec,
    PipelineSpec,
    ServeSpec,
    SpecError,
    load_spec,
    section_override,
)
from distillery.serving.admin import TOKEN_ENV, token_digest
from distillery.serving.coordinator import RolloutCoordinator
from distillery.serving.deployments import ModelServer, ModelSource
from distillery.serving.router import Router
from distillery.storage import Store
from distillery.store_layout import served_models

APP_NAME = "distillery"


def build_app(spec: PipelineSpec, admin_digest: str | None) -> Application:
    serving = spec.serve or ServeSpec()
    store = Store(spec.store)
    parts, cards = served_models(spec)
    for arm, card in cards.items():
        if spec.reads_text and "tokenizer" not in card:
            raise SpecError(f"serve: {'/'.join(parts[arm])} has no tokenizer stored beside it "
                            f"(exported before text serving); train or distill the {arm} again")
    versions = {"teacher": parts["teacher"][-1], "student": parts["student"][-1]}
    sources = {arm: ModelSource(store.root, parts[arm], deployment.max_batch_size,
                                deployment.batch_wait_timeout_s)
               for arm in parts for deployment in [getattr(serving, f"{arm}_deployment")]}
    if serving.topology == "separate":
        sources = {arm: ModelServer.options(
                       **_options(arm, getattr(serving, f"{arm}_deployment"), serving))
                   .bind(*astuple(source)) for arm, source in sources.items()}
    # replicas may run elsewhere: they get the store as an absolute path or URI
    pipeline = spec.model_copy(update={"store": store.root})
    coordinator = RolloutCoordinator.options(logging_config=_logging(serving)).bind(
        pipeline, versions["student"])
    # signs the router replicas' request ids, so feedback may reach any of them; new with
    # each build of the app, as the A/B outcomes are
    feedback_key = os.urandom(32)
    return Router.options(num_replicas=serving.router_replicas,
                          ray_actor_options={"num_cpus": serving.router_cpus},
                          logging_config=_logging(serving)).bind(
        sources["teacher"], sources["student"], coordinator, cards, versions, pipeline,
        admin_digest, feedback_key)


def _logging(serving: ServeSpec) -> dict:
    """Serve's per-deployment logging: its access log writes a line per request."""
    return {"enable_access_log": serving.access_log}


def _options(name: str, deployment: ModelServingSpec, serving: ServeSpec) -> dict:
    options = {"name": name, "ray_actor_options": {"num_cpus": deployment.cpus_per_replica},
               # room for two batches in flight, or Serve caps the batch below max_batch_size
               "max_ongoing_requests": max(2 * deployment.max_batch_size, 8),
               "logging_config": _logging(serving)}
    if deployment.autoscaling is None:
        return {**options, "num_replicas": deployment.replicas}
    return {**options, "autoscaling_config": deployment.autoscaling.model_dump()}


def app_builder(args: dict) -> Application:
    """`serve run distillery.serving.app:app_builder config=jobs/configs/mnist1d.yaml`, or a
    Serve config file (serve/mnist1d.yaml) with args `config`, optional `serving` (the serve
    section from a file) and `set` (a list of key.path=value overrides)."""
    unknown = set(args) - {"config", "serving", "set"}
    if "config" not in args or unknown:
        raise SpecError(f"app args: `config` (the pipeline spec) is required; `serving` and "
                        f"`set` are optional; unknown: {sorted(unknown)}")
    overrides = args.get("set", [])
    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    if args.get("serving"):
        overrides.insert(0, section_override("serve", args["serving"], "serving"))
    return build_app(load_spec(args["config"], overrides), token_digest())


def serve_forever(app: Application, *, app_name: str, host: str, port: int, banner: str,
                  embedded: bool) -> None:
    """Deploy `app` on the connected Ray as `app_name`, print `banner`, and block until
    Ctrl-C or SIGTERM (`distillery serve`). On an `embedded` local Ray the app is deleted
    gracefully, so the router writes its buffered request log; on a cluster the app keeps
    serving until `serve shutdown`."""
    # process managers stop services with SIGTERM: treat it like Ctrl-C
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:  # a signal during startup stops as cleanly as one later
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=app_name, route_prefix="/")
        print(f"serving on http://{host}:{port} {banner}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if embedded:
            # only our app: `ray.init()` may have joined a local `ray start` serving others
            serve.delete(app_name)
        print("stopped" if embedded else "detached; the app keeps serving until `serve "
              "shutdown`", flush=True)


def serve_pipeline(spec: PipelineSpec, app: Application, port: int | None,
                   embedded: bool) -> None:
    """serve_forever for the app of `build_app(spec, ...)`."""
    serving = spec.serve or ServeSpec()
    banner = (f"(POST /v1/models/{{teacher,student,{spec.name}}}:predict); admin API "
              + ("enabled" if token_digest() else f"disabled: set {TOKEN_ENV} to enable it"))
    serve_forever(app, app_name=APP_NAME, host=serving.host, port=port or serving.port,
                  banner=banner, embedded=embedded)
