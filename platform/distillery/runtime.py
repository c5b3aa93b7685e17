"""Connecting to Ray: the embedded local Ray by default, or a cluster by address."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from pathlib import Path

import ray

import distillery


def ensure_ray(address: str | None = None) -> None:
    """Start or join Ray once per process.

    No address and no RAY_ADDRESS: an embedded local Ray with this machine's CPUs. Otherwise
    join the cluster and ship this package to its workers, so a `ray job submit` from a plain
    clone runs even where the nodes do not have it installed.
    """
    if ray.is_initialized():
        return
    # Ray Train's print patch logs each worker print twice on the driver; once is enough.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # The Train controller polls workers every 2 s by default and a report() waits for that
    # poll, so epochs shorter than the interval stall on it. Propagated to the workers.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        package_dir = str(Path(distillery.__file__).parent)
        ray.init(address=address, runtime_env={"py_modules": [package_dir]},
                 logging_level=logging.WARNING)
    else:
        # Ray Train's preemption watcher (an actor process per fit) follows cluster nodes
        # being drained; an embedded one-machine Ray is never drained.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = True


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def unfinished_runs(store, name: str, parts: tuple[str, ...]) -> list[str]:
    """Run ids (new_run_id(name)) under `parts` of the store without an exported card, oldest
    first: distill runs that were interrupted."""
    pattern = re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}-[0-9a-f]{{4}}")
    return [r for r in store.listdir(*parts) if pattern.fullmatch(r)
            and not store.exists(*parts, r, "card.json")]


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
