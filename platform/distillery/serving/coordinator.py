"""The rollout's one place per app, however many router replicas serve: a Serve deployment of
one replica that holds the rollout state and its decision loop (controller.RolloutController,
persisted in the store), adds up what every router replica measured, counts A/B outcomes once
per answer, and runs the scheduled monitoring check whose alerts feed the gate.

Router replicas call `sync` every `interval_s / 2` with what they measured since their last
call and route by the state it returns, so every replica applies a new weight within one check
interval. Nothing here is on a request's path: a request costs the router replica alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from ray import serve

from distillery.config import PipelineSpec, ServeSpec
from distillery.serving import rollout
from distillery.serving.controller import RolloutController
from distillery.serving.feedback import Outcomes
from distillery.serving.request_monitor import ScheduledCheck
from distillery.storage import Store

logger = logging.getLogger("ray.serve")
ROUTING = ("weight", "status", "step_started")  # what a router replica needs of the state


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class RolloutCoordinator:
    async def __init__(self, pipeline: PipelineSpec, student_version: str):
        spec = pipeline.serve or ServeSpec()
        self.check = ScheduledCheck(pipeline)
        self.controller = await RolloutController.load(spec.rollout, Store(pipeline.store),
                                                    student_version, self.check.gate)
        self.outcomes = Outcomes()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.controller.run()), *self.check.start(loop)]

    def sync(self, report: dict | None, step_started: float | None) -> dict:
        """Adds a router replica's report (controller.Window.report) of the step that started
        at `step_started`, dropped when the step has changed since; returns the state to route
        by."""
        if report is not None and step_started == self.controller.state["step_started"]:
            self.controller.window.add(report)
        return {k: self.controller.state[k] for k in ROUTING}

    def redeem(self, request_id: str, arm: str, success: bool) -> bool:
        """Counts the outcome of a verified routed answer; False when it was counted already."""
        return self.outcomes.redeem(request_id, arm, success)

    def status(self) -> dict:
        rollout_status = self.controller.status()
        decisions = rollout_status.pop("decisions")
        return {**rollout_status, "ab": self.outcomes.summary(),
                "monitor": self.check.status(), "decisions": decisions}

    async def act(self, action: str) -> dict:
        """An operator's action on the rollout: the new status, or {"error": why} when the
        rollout's state does not allow it."""
        try:
            new = rollout.operator_action(self.controller.state, action, time.time())
        except ValueError as err:
            return {"error": str(err)}
        logger.info("rollout operator action: %s", json.dumps(new["decisions"][-1]))
        await self.controller.apply(new)
        return self.status()

    async def __del__(self) -> None:
        for task in self.tasks:
            task.cancel()
