"""The router's side of monitoring: the request log's buffer and its flushes to the store, and
the scheduled monitoring check, whose latest alerts feed the rollout's `alerts` gate."""

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
    """`log(entry)` buffers a request's rows (with `monitor.request_log.enabled`); the tasks of
    `start` write the buffer every `flush_seconds` and, with `monitor.check_interval_s`, run
    the drift/control/alert check over the last `window_s`. A failed write keeps the rows
    until the buffer is full, then drops and counts them."""

    def __init__(self, pipeline: PipelineSpec, store: Store):
        self.pipeline, self.spec, self.store = pipeline, pipeline.monitor, store
        self.request_log = (RequestLog(store, self.spec.request_log)
                            if self.spec.request_log.enabled else None)
        self.alerts: list | None = None  # the latest check's; None: none ran yet
        self.sent: frozenset = frozenset()  # (rule, signal) pairs the webhook already has
        self.last_check: dict | None = None
        self.dropped_reported = 0
        self.log_rows = Counter("distillery_request_log_rows", "request-log rows, by outcome: "
                                "written, or dropped (buffer full while the store was down)",
                                tag_keys=("outcome",))
        self.alerts_gauge = Gauge("distillery_active_alerts", "alerts of the latest monitoring "
                                  "check")
        self.run_check: Callable | None = None
        if self.spec.check_interval_s is not None:
            # Evidently takes seconds to import: only a router that runs checks pays for it, and
            # before it reports ready (imported at the first check instead, in a thread, it held
            # that check past the monitoring test's window)
            from distillery.monitoring.check import run_check

            self.run_check = run_check

    def start(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task]:
        """The flush loop (with a request log) and the check loop (with a schedule)."""
        tasks = []
        if self.request_log:
            tasks.append(loop.create_task(self._flush_loop()))
        if self.run_check:
            tasks.append(loop.create_task(self._check_loop()))
        return tasks

    def log(self, entry: Entry) -> None:
        if self.request_log:
            self.request_log.append(entry)  # a full buffer drops the rows and counts them

    def gate(self) -> tuple[int | None, bool]:
        """(active alerts, None before the first check; whether the rollout's alerts gate
        applies: only the scheduled check in this app produces alerts it can wait for)."""
        gated = self.spec.alerts.gate_rollout and self.run_check is not None
        return (None if self.alerts is None else len(self.alerts)), gated

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

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.check_interval_s)
            end = datetime.now(timezone.utc)
            start = end - timedelta(seconds=self.spec.window_s)
            try:
                await self.flush()  # the check reads what is in the store
                result = await asyncio.to_thread(self.run_check, self.pipeline, start, end,
                                                 already_sent=self.sent)
            except Exception:  # one failed check must not end the schedule
                logger.exception("monitoring check failed")
                continue
            self.alerts, self.last_check = result.alerts, result.status()
            self.sent = result.sent  # a condition pages once, until a check clears it
            self.alerts_gauge.set(len(result.alerts))

    def status(self) -> dict:
        log = self.request_log
        return {"request_log": None if log is None else {
                    "buffered": log.rows, "written": log.written, "dropped": log.dropped},
                "alerts": None if self.alerts is None else [a.to_json() for a in self.alerts],
                "last_check": self.last_check}
