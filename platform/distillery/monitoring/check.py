"""One monitoring check over a window of live traffic: drift report, control charts, alerts.

`distillery drift`, `distillery monitor charts`, `jobs/drift.py` and the Serve app's schedule
all call `run_check`. Everything it writes goes under monitor/reports/<window>/: the Evidently
report (report.html, report.json, summary.json), one control-chart PNG per signal and
check.json (what was measured, every alert).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from distillery.config import PipelineSpec
from distillery.data.sources import open_source
from distillery.data.text import DESCRIPTORS, descriptors, stored_encoding
from distillery.models import load_model
from distillery.monitoring.alerts import Alert, dispatch, evaluate_rules
from distillery.monitoring.control_charts import Chart, bucket_signals, chart, plot_control_chart
from distillery.monitoring.drift import (
    drift_report,
    reference_frame,
    save_report,
    window_frame,
    window_label,
)
from distillery.monitoring.request_log import read_requests
from distillery.storage import Store
from distillery.store_layout import MONITOR_REPORTS, served_models

logger = logging.getLogger("distillery.monitor")


@dataclass(frozen=True)
class CheckResult:
    window: str
    rows: int
    drift: dict | None  # the drift summary; None when the window had too few rows
    charts: dict[str, Chart]
    alerts: list[Alert]
    files: dict[str, str]  # what was written -> URI
    sent: frozenset[tuple[str, str | None]]  # (rule, signal) the webhook has had (dispatch)

    def status(self) -> dict:
        """The JSON a user or the admin API sees."""
        return {"window": self.window, "rows": self.rows, "drift": self.drift,
                "charts": {name: chart_summary(c) for name, c in self.charts.items()},
                "alerts": [a.to_json() for a in self.alerts], "files": self.files}


def student_rows(table: pa.Table) -> pa.Table:
    """The rows the student answered, as the reference holds its outputs; all rows when it
    answered none (teacher-only or shadow serving), as for the charts' confidence."""
    answered = table.filter(pc.equal(table["model"], "student"))
    return answered if answered.num_rows else table


def chart_summary(chart: Chart) -> dict:
    """A chart in a few numbers: its limits and the buckets found out of control."""
    limits = chart.limits
    return {"statistic": chart.statistic, "points": len(chart.values),
            "reference_points": chart.reference, "mean": limits.mean, "lower": limits.lower,
            "upper": limits.upper,
            "out_of_control": [str(t) + "Z" for t in chart.start[chart.out_of_control]]}


def run_check(spec: PipelineSpec, start: datetime, end: datetime, *, drift: bool = True,
              send_alerts: bool = True,
              already_sent: frozenset[tuple[str, str | None]] = frozenset()) -> CheckResult:
    """Compare the logged requests in [start, end) with the reference (unless `drift` is
    off), chart the signals, evaluate the alert rules and (with `send_alerts`) send what fires
    to the configured sinks; the webhook skips the (rule, signal) pairs in `already_sent` (the
    scheduled check passes those of its previous check)."""
    monitor, store = spec.monitor, Store(spec.store)
    label = window_label(start, end)
    table = read_requests(store, start, end)
    parts, cards = served_models(spec)
    files, summary = {}, None
    if drift and table.num_rows >= monitor.drift.min_rows:
        text = stored_encoding(store, parts["student"], cards["student"])
        result = drift_report(reference(spec), window_frame(student_rows(table), text),
                              monitor.drift)
        files |= save_report(store, label, result)
        summary = result.summary
    elif drift:
        logger.info("drift: %d rows in %s, fewer than drift.min_rows=%d; not compared",
                    table.num_rows, label, monitor.drift.min_rows)
    num_classes = cards["teacher"]["num_classes"]
    series = bucket_signals(table, monitor.control.bucket_seconds,
                            monitor.control.min_bucket_rows, num_classes)
    charts = {}
    for name in monitor.control.signals:
        if len(series[name].values) > monitor.control.reference_buckets:  # limits need a reference
            charts[name] = chart(series[name], monitor.control)
            store.write_bytes(plot_control_chart(charts[name], f"{spec.name}: {name}"),
                              *MONITOR_REPORTS, label, f"control-{name}.png")
            files[f"control-{name}"] = store.uri(*MONITOR_REPORTS, label, f"control-{name}.png")
    alerts = evaluate_rules(monitor.alerts.rules, summary, charts, label)
    sent = (dispatch(alerts, monitor.alerts, logger, already_sent)["sent"] if send_alerts
            else frozenset())
    files["check"] = store.uri(*MONITOR_REPORTS, label, "check.json")
    check = CheckResult(label, table.num_rows, summary, charts, alerts, files, sent)
    store.write_json(check.status(), *MONITOR_REPORTS, label, "check.json")
    if monitor.keep_reports is not None:
        prune_reports(store, monitor.keep_reports, spare=label)
    return check


def prune_reports(store: Store, keep: int, spare: str | None = None) -> list[str]:
    """Delete all but the `keep` latest report folders (their labels sort by window start) and
    `spare` (the check just written, which may be of an older window); returns the labels
    deleted."""
    old = [label for label in store.listdir(*MONITOR_REPORTS)[:-keep] if label != spare]
    for label in old:
        store.remove_dir(*MONITOR_REPORTS, label)
    return old


def reference(spec: PipelineSpec):
    """The reference frame: up to `drift.reference_rows` held-out rows (validation, then test
    split) with the served student's outputs on them (and the teacher's, for agreement). Kept
    per process: the scheduled check reuses it until the served pair or the data changes."""
    parts, _ = served_models(spec)
    key = (Store(spec.store).root, parts["teacher"], parts["student"],
           spec.data.model_dump_json(), spec.monitor.drift.reference_rows)
    if key not in _REFERENCES:
        _REFERENCES.clear()
        _REFERENCES[key] = _build_reference(spec, parts)
    return _REFERENCES[key]


_REFERENCES: dict[tuple, object] = {}


def _build_reference(spec: PipelineSpec, parts: dict[str, tuple[str, ...]]):
    # Held-out rows, not training rows: the student is more confident on rows it learned
    # from, so a training-row reference flags confidence and entropy in every clean window.
    # The transfer set (often the largest part) is not needed here.
    store = Store(spec.store)
    splits = open_source(spec.data, store, transfer=False).sample()
    held_out = np.concatenate([splits.x_val, splits.x_test])
    rows = min(spec.monitor.drift.reference_rows, len(held_out))
    # a seeded sample, not the first rows: a split may be ordered (by time, by class)
    pick = np.sort(np.random.default_rng(0).choice(len(held_out), rows, replace=False))
    x = torch.from_numpy(held_out[pick])
    logits, cards = {}, {}
    for arm, where in parts.items():
        model, cards[arm] = load_model(store, where)
        with torch.inference_mode():
            logits[arm] = model(x).float().numpy()  # (rows, C)
    text = stored_encoding(store, parts["student"], cards["student"])
    if text is None:
        return reference_frame(x.numpy(), logits["student"], logits["teacher"])
    return reference_frame(descriptors(x.numpy(), text), logits["student"], logits["teacher"],
                           DESCRIPTORS)
