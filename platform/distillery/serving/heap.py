"""Keeping the garbage collector's full passes short in long-lived serving replicas."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Exempt every object alive now from garbage collection; call at the end of a replica's
    `__init__`.

    A replica imports torch, Ray and FastAPI: ~290,000 tracked objects, and a full collection
    walks them all, ~150 ms here (measured 2026-11-30), during which the replica answers
    nothing. Frozen, a full pass walks only what was made since: ~0.2 ms. Frozen objects are
    never collected, cyclic garbage among them included: what start-up leaves is kept for the
    life of the process.
    """
    gc.collect()
    gc.freeze()
