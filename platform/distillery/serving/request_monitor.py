"""Serving's side of monitoring: each router replica's request-log buffer and its flushes to the
store, and the app's scheduled monitoring check, whose latest alerts feed the rollout's
`alerts` gate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from ray.serve.metrics import Counter, Gauge

from distillery.config import PipelineSpec
from distillery.monitoring.request_log import Entry, RequestLog
from distillery.storage import Store

logger = logging.getLogger("ray.serve")


class RequestMonitor:
    """A router replica's request log: `log(entry)` buffers a request's rows (with
    `monitor.request_log.enabled`); the task of `start` writes the buffer every
    `flush_seconds`. A failed write keeps the rows until the buffer is full, then drops and
    counts them. Each replica writes files of its own."""

    def __init__(self, pipeline: PipelineSpec, store: Store):
        self.spec, self.store = pipeline.monitor, store
        self.request_log = (RequestLog(store, self.spec.request_log)
                            if self.spec.request_log.enabled else None)
        self.dropped_reported = 0
        self.log_rows = Counter("distillery_request_log_rows", "request-log rows, by outcome: "
                                "written, or dropped (buffer full while the store was down)",
                                tag_keys=("outcome",))

    def start(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task]:
        """The flush loop (with a request log)."""
        return [loop.create_task(self._flush_loop())] if self.request_log else []

    def log(self, entry: Entry) -> None:
        if self.request_log:
            self.request_log.append(entry)  # a full buffer drops the rows and counts them

    async def flush(self) -> None:
        log = self.request_log
        if log is None:
            return
        entries = log.take()
        if entries:
            try:
                written = await asyncio.to_thread(log.write, entries)
                self.log_rows.inc(written, tags={"outcome": "written"})
            except Exception as err:  # the store is down: keep the rows while there is room
                log.give_back(entries)
                logger.warning("request log: write to %s failed (%s); %d rows buffered, %d "
                               "dropped so far", self.store.root, err, log.rows, log.dropped)
        if log.dropped > self.dropped_reported:
            self.log_rows.inc(log.dropped - self.dropped_reported, tags={"outcome": "dropped"})
            self.dropped_reported = log.dropped

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.spec.request_log.flush_seconds))
            if self.request_log.due():
                await self.flush()

    def status(self) -> dict | None:
        log = self.request_log
        return None if log is None else {
            "buffered": log.rows, "written": log.written, "dropped": log.dropped}


class ScheduledCheck:
    """With `monitor.check_interval_s`, the drift/control/alert check over the last `window_s`
    of the request log (every router replica's files, as flushed to the store), once per app
    in the coordinator; the latest check's alerts feed the rollout's `alerts` gate."""

    def __init__(self, pipeline: PipelineSpec):
        self.pipeline, self.spec = pipeline, pipeline.monitor
        self.alerts: list | None = None  # the latest check's; None: none ran yet
        self.sent: frozenset = frozenset()  # (rule, signal) pairs the webhook already has
        self.last_check: dict | None = None
        self.alerts_gauge = Gauge("distillery_active_alerts", "alerts of the latest monitoring "
                                  "check")
        self.run_check: Callable | None = None
        if self.spec.check_interval_s is not None:
            # Evidently takes seconds to import: only an app that runs checks pays for it, and
            # before it reports ready (imported at the first check instead, in a thread, it held
            # that check past the monitoring test's window)
            from distillery.monitoring.check import run_check

            self.run_check = run_check

    def start(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task]:
        """The check loop (with a schedule)."""
        return [loop.create_task(self._check_loop())] if self.run_check else []

    def gate(self) -> tuple[int | None, bool]:
        """(active alerts, None before the first check; whether the rollout's alerts gate
        applies: only the scheduled check in this app produces alerts it can wait for)."""
        gated = self.spec.alerts.gate_rollout and self.run_check is not None
        return (None if self.alerts is None else len(self.alerts)), gated

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.check_interval_s)
            end = datetime.now(timezone.utc)
            start = end - timedelta(seconds=self.spec.window_s)
            try:
                result = await asyncio.to_thread(self.run_check, self.pipeline, start, end,
                                                 already_sent=self.sent)
            except Exception:  # one failed check must not end the schedule
                logger.exception("monitoring check failed")
                continue
            self.alerts, self.last_check = result.alerts, result.status()
            self.sent = result.sent  # a condition pages once, until a check clears it
            self.alerts_gauge.set(len(result.alerts))

    def status(self) -> dict:
        return {"alerts": None if self.alerts is None else [a.to_json() for a in self.alerts],
                "last_check": self.last_check}
