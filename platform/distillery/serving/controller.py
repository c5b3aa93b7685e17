"""The rollout controller: the rollout state, what the current step has measured (the sum of
every router replica's reports), the loop that calls `rollout.decide` every `interval_s`, and
the state's persistence in the store (at every change, operator actions included; a failed
save is retried every tick). It lives in the coordinator (coordinator.py), once per app."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ray.serve.metrics import Gauge

from distillery.config import RolloutSpec
from distillery.serving import rollout
from distillery.storage import Store

logger = logging.getLogger("ray.serve")
LATENCY_WINDOW = 5000  # student latencies kept for the p99 gate


@dataclass
class Window:
    """What the controller measures, since the current step began."""

    requests: int = 0
    student_calls: int = 0  # answers and shadow calls
    student_errors: int = 0
    student_latency_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    agreements: int = 0
    pairs: int = 0

    COUNTS = ("requests", "student_calls", "student_errors", "agreements", "pairs")

    def report(self) -> dict:
        """What a router replica measured since its last report, for the coordinator."""
        return {**{k: getattr(self, k) for k in self.COUNTS},
                "student_latency_ms": list(self.student_latency_ms)}

    def add(self, report: dict) -> None:
        """One router replica's report, added to the step's totals."""
        for k in self.COUNTS:
            setattr(self, k, getattr(self, k) + report[k])
        self.student_latency_ms.extend(report["student_latency_ms"])

    def measurement(self, alerts: int | None, alerts_gate: bool) -> rollout.Measurement:
        p99 = rollout.percentile(list(self.student_latency_ms), 99) if (
            self.student_latency_ms) else None
        return rollout.Measurement(self.requests, self.student_calls, self.student_errors,
                                   p99, self.agreements, self.pairs, alerts, alerts_gate)


class RolloutController:
    """`state` is the rollout's (weight, status, step, decisions); `window` is what the router
    records as it serves. `alerts()` gives (active alerts or None before any check, whether
    the alerts gate applies)."""

    def __init__(self, spec: RolloutSpec, store: Store, state: dict,
                 alerts: Callable[[], tuple[int | None, bool]]):
        self.spec, self.store, self.state, self.alerts = spec, store, state, alerts
        self.window = Window()
        self.save_lock = asyncio.Lock()
        self.unsaved = False  # the store refused the latest state; every tick retries
        self.weight_gauge = Gauge("distillery_rollout_weight", "percent of routed traffic the "
                                  "student gets")
        self.weight_gauge.set(state["weight"])

    @classmethod
    async def load(cls, spec: RolloutSpec, store: Store, student_version: str,
                   alerts: Callable[[], tuple[int | None, bool]]) -> RolloutController:
        """The controller of the state saved in `store` (or a new rollout's, or the safe
        default of an unreadable one: all traffic to the teacher)."""
        state, note = await asyncio.to_thread(rollout.load_state, store, spec, student_version,
                                              time.time())
        # an unreadable state is an operator's problem to fix: say so at error level
        (logger.error if "error" in state else logger.info)("rollout: %s", note)
        return cls(spec, store, state, alerts)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.spec.interval_s)
            try:
                new, decision = rollout.decide(self.state, self.spec, self.measurement(),
                                               time.time())
                logger.info("rollout decision: %s", json.dumps(decision))
                await self.apply(new)
            except Exception:  # the controller must outlive one bad tick; the state is kept
                logger.exception("rollout controller tick failed")

    def measurement(self) -> rollout.Measurement:
        return self.window.measurement(*self.alerts())

    async def apply(self, new: dict) -> None:
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
                                   "every %g s", self.store.root, err, self.spec.interval_s)

    def status(self) -> dict:
        """The state less its decision log, the gates' checks, and the last 10 decisions."""
        state = {k: v for k, v in self.state.items() if k != "decisions"}
        return {**state, "gates": [vars(c) for c in rollout.check_gates(
                    self.spec.gates, self.measurement())],
                "requests_in_step": self.window.requests,
                "decisions": self.state["decisions"][-10:]}
