"""Data-drift reports: a live window of the request log against a reference, with Evidently.

Both sides are frames with the same columns, one row per instance:
`x0..x{D-1}` (the inputs; of a text model, its texts' descriptors: `tokens` and
`unknown_share`, data/text.py), `prediction` (top-1 class), `confidence` (top-1 probability),
`entropy` (nats, -sum_c p_c ln p_c) and, when known, `agrees` (student and teacher top-1 agree).
The reference is the training split with the served student's outputs on it, the live window
the rows the student answered in the request log. Each column is compared on its own
(Evidently's DataDriftPreset: the method per column type comes from the spec, or Evidently's
default for the type and size), and the window counts as drifted when the share of drifted
columns reaches `drift_share`.

A report lands in the store as `monitor/reports/<window label>/`: report.html (Evidently's
page), report.json (Evidently's snapshot: metrics and per-column tests) and summary.json (the
numbers below, written last: a directory without it is an unfinished report).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations import stattests
from evidently.legacy.calculations.stattests.registry import StatTest, get_registered_stattest
from evidently.legacy.core import ColumnType
from evidently.presets import DataDriftPreset

from distillery.config import DriftSpec
from distillery.data.text import DESCRIPTORS, TextEncoding, descriptors, tokenize
from distillery.evaluation.metrics import log_softmax
from distillery.storage import Store
from distillery.store_layout import MONITOR_REPORTS

CATEGORICAL = ("prediction", "agrees")
"""Columns compared as categories; every other column is numerical."""
TOP_DRIFTED = 10
"""Drifted columns listed in the summary, furthest past their threshold first."""

# Evidently names an auto-selected method by its display name ("Wasserstein distance (normed)")
# and a requested one by its id ("ks"); the summary always uses the id, as the spec does.
_METHOD_IDS = {t.display_name: t.name for t in vars(stattests).values() if isinstance(t, StatTest)}


class NotEnoughRows(ValueError):
    """The live window holds fewer rows than `monitor.drift.min_rows`."""


@dataclass(frozen=True)
class DriftResult:
    summary: dict
    """See `drift_report`."""
    html: str
    """Evidently's standalone HTML page."""
    json: str
    """Evidently's snapshot JSON (metrics and tests)."""


def frame(inputs: np.ndarray, prediction: np.ndarray, confidence: np.ndarray,
          entropy: np.ndarray, agrees: np.ndarray | None = None,
          input_names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per instance: inputs (N, D) -> x0..x{D-1} (or `input_names`); prediction,
    confidence, entropy (N,); agrees (N,) bool or 0/1 with NaN/None where unknown, stored as
    pandas' nullable boolean."""
    inputs = np.asarray(inputs)
    if inputs.ndim != 2:
        raise ValueError(f"inputs: expected shape (N, D), got {inputs.shape}")
    n = len(inputs)
    columns = {"prediction": prediction, "confidence": confidence, "entropy": entropy}
    if agrees is not None:
        columns["agrees"] = agrees
    for name, values in columns.items():
        if np.shape(values) != (n,):
            raise ValueError(f"{name}: expected shape ({n},) to match inputs {inputs.shape}, "
                             f"got {np.shape(values)}")
    df = pd.DataFrame(inputs, columns=list(input_names or (f"x{i}" for i in
                                                           range(inputs.shape[1]))))
    df["prediction"] = np.asarray(prediction, dtype=np.int64)
    df["confidence"] = np.asarray(confidence, dtype=np.float32)
    df["entropy"] = np.asarray(entropy, dtype=np.float32)
    if agrees is not None:
        df["agrees"] = _nullable_bool(np.asarray(agrees, dtype=np.float64))
    return df


def _nullable_bool(values: np.ndarray) -> pd.arrays.BooleanArray:
    known = ~np.isnan(values)
    if not np.isin(values[known], (0.0, 1.0)).all():
        raise ValueError(f"agrees: expected booleans or 0/1 with NaN where unknown, got values "
                         f"{sorted(set(values[known].tolist()) - {0.0, 1.0})[:5]}")
    return pd.arrays.BooleanArray(values == 1.0, mask=~known)


def reference_frame(inputs: np.ndarray, logits: np.ndarray,
                    teacher_logits: np.ndarray | None = None,
                    input_names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The reference from the monitored model's logits (N, C) on `inputs` (N, D):
    p = softmax(logits), prediction = argmax p, confidence = max p, entropy = -sum_c p_c ln p_c;
    agrees = argmax p == argmax teacher_logits when the teacher's logits on the same rows are
    given. The monitored model is the served student: live rows carry its answers, and a
    teacher-based reference would flag its (lower) confidence as drift in every window."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64))
    p = np.exp(logp)
    agrees = None
    if teacher_logits is not None:
        agrees = np.argmax(teacher_logits, axis=1) == p.argmax(axis=1)
    return frame(inputs, p.argmax(axis=1), p.max(axis=1), -(p * logp).sum(axis=1), agrees,
                 input_names)


def window_frame(table: pa.Table, text: TextEncoding | None = None) -> pd.DataFrame:
    """The live window from request-log rows (`distillery.monitoring.request_log.SCHEMA`); of a
    text model (`text`, its tokenizer), the logged texts' descriptors in place of inputs."""
    n = table.num_rows
    agrees = table.column("agrees").to_numpy(zero_copy_only=False)  # object with None if nulls
    outputs = (table.column("prediction").to_numpy(), table.column("confidence").to_numpy(),
               table.column("entropy").to_numpy(), agrees)
    if text is not None:
        texts = table.column("text").to_pylist()
        if None in texts:
            raise ValueError("request log: rows without a text in a text model's window")
        ids = tokenize(texts, text)[0].reshape(n, text.max_length)
        return frame(descriptors(ids, text), *outputs, input_names=DESCRIPTORS)
    inputs = table.column("inputs").combine_chunks()
    low, high = (v.as_py() for v in pc.min_max(pc.list_value_length(inputs)).values())
    if inputs.null_count or low != high:
        raise ValueError(f"request log: inputs have {low} to {high} features "
                         f"({inputs.null_count} missing); a window must hold one model's inputs")
    x = inputs.flatten().to_numpy().reshape(n, low or 0)  # low is None for an empty window
    return frame(x, *outputs)


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, spec: DriftSpec) -> DriftResult:
    """Compare `current` (the live window) with `reference`, column by column.

    `agrees` is compared only where it is known: Evidently drops the unknown rows of a column,
    and the column is left out of both sides when the window has fewer than `spec.min_rows` known
    rows (no or too few shadowed requests) or the reference has none.

    summary: dataset_drift (share_of_drifted_columns >= spec.drift_share),
    share_of_drifted_columns, number_of_columns, number_of_drifted_columns, drift_share,
    drifted_columns (at most 10 {column, method, score, threshold}, furthest past the threshold
    first), rows {reference, current}, method {column type: {method id: threshold}},
    agrees {compared, rows {reference, current} known, reason}.
    """
    if len(current) < spec.min_rows:
        raise NotEnoughRows(f"the live window has {len(current)} rows; a drift report needs at "
                            f"least monitor.drift.min_rows={spec.min_rows}")
    mismatch = (set(reference.columns) ^ set(current.columns)) - {"agrees"}
    if mismatch:
        raise ValueError(f"reference and live window differ in columns {sorted(mismatch)}; "
                         "both must be frames of the same model's inputs")
    reference, current, agrees = _agreement(reference, current, spec.min_rows)

    kinds = {c: "categorical" if c in CATEGORICAL else "numerical" for c in reference.columns}
    for kind, test in (("numerical", spec.numerical), ("categorical", spec.categorical)):
        if test.method is not None:
            _check_method(kind, test.method)
    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numerical"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"])
    preset = DataDriftPreset(
        drift_share=spec.drift_share,
        num_method=spec.numerical.method, num_threshold=spec.numerical.threshold,
        cat_method=spec.categorical.method, cat_threshold=spec.categorical.threshold)
    snapshot = Report([preset], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition))
    snapshot_json = snapshot.json()
    summary = _summarize(json.loads(snapshot_json), kinds)
    summary |= {"drift_share": spec.drift_share, "agrees": agrees,
                "rows": {"reference": len(reference), "current": len(current)}}
    return DriftResult(summary, snapshot.get_html_str(as_iframe=False), snapshot_json)


def _agreement(reference: pd.DataFrame, current: pd.DataFrame,
               min_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(reference, current, agrees summary) with `agrees` dropped from both where it cannot be
    compared."""
    known = {name: int(df["agrees"].notna().sum()) if "agrees" in df else 0
             for name, df in (("reference", reference), ("current", current))}
    if known["reference"] == 0:
        reason = "the reference has no student-teacher agreement (no student logits given)"
    elif known["current"] < min_rows:
        reason = (f"{known['current']} rows of the window ran on both student and teacher; "
                  f"comparing agreement needs monitor.drift.min_rows={min_rows}")
    else:
        return reference, current, {"compared": True, "rows": known, "reason": None}
    drop = ["agrees"]
    return (reference.drop(columns=drop, errors="ignore"),
            current.drop(columns=drop, errors="ignore"),
            {"compared": False, "rows": known, "reason": reason})


def _check_method(kind: str, method: str) -> None:
    column_type = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    try:
        get_registered_stattest(method, column_type)
    except ValueError as err:  # Evidently's message lists the valid names
        raise ValueError(f"monitor.drift.{kind}.method: {err}") from None


def _summarize(snapshot: dict, kinds: dict[str, str]) -> dict:
    """The summary numbers from Evidently's snapshot dict (metrics + tests)."""
    count, columns = None, {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":DriftedColumnsCount"):
            count = metric
        elif config["type"].endswith(":ValueDrift"):
            columns[metric["id"]] = {
                "column": config["column"],
                "method": _METHOD_IDS.get(config["method"], config["method"]),
                "score": float(metric["value"]),
                "threshold": float(config["threshold"]),
            }
    failed = {t["metric_config"]["metric_id"] for t in snapshot["tests"] if t["status"] == "FAIL"}
    drifted = [c for metric_id, c in columns.items() if metric_id in failed]
    # A drifted column is past its threshold in its method's direction (p-values below,
    # distances above), so the larger of the two ratios is how far past it is.
    drifted.sort(key=lambda c: (-_past(c["score"], c["threshold"]), c["column"]))
    methods: dict[str, dict[str, float]] = {}
    for c in columns.values():
        methods.setdefault(kinds[c["column"]], {})[c["method"]] = c["threshold"]
    return {
        "dataset_drift": count["id"] in failed,
        "share_of_drifted_columns": float(count["value"]["share"]),
        "number_of_columns": len(columns),
        "number_of_drifted_columns": len(drifted),
        "drifted_columns": drifted[:TOP_DRIFTED],
        "method": methods,
    }


def _past(score: float, threshold: float) -> float:
    if score <= 0:
        return math.inf
    return max(score / threshold, threshold / score)


def window_label(start: datetime, end: datetime) -> str:
    """`20261129T200000Z-20261129T210000Z`: the window's UTC start and end, to the second
    (checks seconds apart get folders of their own)."""
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None:
            raise ValueError(f"window {name} {t.isoformat()} has no time zone; the request log "
                             "is in UTC, give an aware datetime")
    if end <= start:
        raise ValueError(f"window end {end.isoformat()} is not after its start "
                         f"{start.isoformat()}")
    return "-".join(t.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") for t in (start, end))


def save_report(store: Store, window_label: str, result: DriftResult) -> dict[str, str]:
    """Write report.html, report.json and summary.json (last) under
    monitor/reports/<window_label>/; each file atomically. Returns {html, json, summary} URIs."""
    parts = {"html": "report.html", "json": "report.json", "summary": "summary.json"}
    store.write_bytes(result.html.encode(), *MONITOR_REPORTS, window_label, parts["html"])
    store.write_bytes(result.json.encode(), *MONITOR_REPORTS, window_label, parts["json"])
    store.write_json(result.summary, *MONITOR_REPORTS, window_label, parts["summary"])
    return {key: store.uri(*MONITOR_REPORTS, window_label, name) for key, name in parts.items()}
