"""A replica's start-up heap is frozen: full collections no longer walk it."""

from __future__ import annotations

import gc

from distillery.serving.heap import freeze_startup_heap


def test_freezing_takes_every_live_object_out_of_the_collected_generations():
    keep = [[] for _ in range(10_000)]  # lists are always tracked: a full pass walks them
    assert any(o is keep[0] for o in gc.get_objects())
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(keep)
        assert not any(o is keep[0] for o in gc.get_objects())  # what a full pass walks
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
