"""bench/monitor.py: its traffic, request-log entries and summary on hand-made inputs, and a
--smoke run end to end on a store of untrained models (no Ray: the check reads the request log
and runs Evidently in-process)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

from helpers import ROOT, add_students, load_bench

BENCH = ROOT / "bench" / "monitor.py"


def test_traffic_is_poisson_requests_of_a_few_rows():
    bench = load_bench("monitor")
    load = bench.traffic(np.random.default_rng(0), 3600.0)
    expected = bench.REQUESTS_PER_MINUTE * 60  # requests per hour; Poisson sd = sqrt of that
    assert abs(len(load.seconds) - expected) < 4 * math.sqrt(expected)
    assert np.all(np.diff(load.seconds) >= 0) and 0 <= load.seconds[0]
    assert load.seconds[-1] < 3600
    assert load.rows.min() == 1 and load.rows.max() == bench.MAX_ROWS
    assert abs(load.shadowed.mean() - bench.SHADOW_FRACTION) < 0.05


def test_entries_take_rows_in_order_and_shadow_only_mirrored_requests():
    bench = load_bench("monitor")
    load = bench.Traffic(seconds=np.array([1.5, 2.0, 70.0]), rows=np.array([2, 1, 3]),
                         shadowed=np.array([False, True, False]),
                         latency_ms=np.array([1.0, 2.0, 3.0]))
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    student, teacher = np.eye(3)[[0, 1, 2, 0, 1, 2]], np.eye(3)[[1, 1, 1, 1, 1, 1]]
    start = datetime(2026, 1, 2, tzinfo=timezone.utc)
    entries = bench.entries(load, start, x, student, teacher, "mnist1d", "v1")
    assert [e.time - start.timestamp() for e in entries] == [1.5, 2.0, 70.0]
    assert [e.inputs.tolist() for e in entries] == [x[0:2].tolist(), x[2:3].tolist(),
                                                     x[3:6].tolist()]
    assert [e.shadow_probs is None for e in entries] == [True, False, True]
    assert entries[1].shadow_probs.tolist() == teacher[2:3].tolist()
    assert {(e.model, e.model_version, e.endpoint) for e in entries} == {
        ("student", "v1", "mnist1d")}
    assert len({e.request_id for e in entries}) == 3


def record(kind: str, alerts: list[str], severity: float | None = None,
           buckets: int | None = None, share: float = 0.05) -> dict:
    return {"kind": kind, "severity": severity, "alarm": bool(alerts), "alerts": alerts,
            "share_of_drifted_columns": share, "drifted_columns": ["confidence"],
            "buckets_to_detect": buckets, "check_seconds": 4.0,
            "confidence_chart": {"shewhart": "a" in alerts, "ewma": False},
            "report_bytes": {"html": 100, "check": 10}}


def test_summary_counts_false_alarms_per_rule_and_detection_per_kind():
    bench = load_bench("monitor")
    records = [record("in_distribution", ["a"], buckets=7), record("in_distribution", []),
               record("in_distribution", ["a", "b"], buckets=0),
               record("in_distribution", [], share=0.1),
               record("iid_noise", ["a"], 0.1, 0), record("iid_noise", [], 0.2),
               record("scale", ["b"], 1.2, None)]
    summary = bench.summarize(records, ["a", "b"])
    false = summary["false_alarm"]
    assert (false["rate"], false["alarms"], false["windows"]) == (0.5, 2, 4)
    assert false["per_rule"] == {"a": 0.5, "b": 0.25}
    assert false["confidence_chart"] == {"shewhart": 0.5, "ewma": 0.0}
    assert false["buckets_to_false_alarm"] == [7, None, 0, None]
    assert summary["share_of_drifted_columns"]["max"] == 0.1
    assert summary["drifted_columns_in_distribution"] == {"confidence": 4}
    detection = summary["detection"]
    assert detection["rate"] == pytest.approx(2 / 3)
    assert detection["per_kind"]["iid_noise"]["per_severity"] == {
        "0.1": {"rate": 1.0, "buckets_to_detect": [0]},
        "0.2": {"rate": 0.0, "buckets_to_detect": [None]}}
    assert detection["per_kind"]["scale"]["per_rule"] == {"a": 0.0, "b": 1.0}
    assert summary["check_seconds"]["rest"]["n"] == 6


def untrained_store(root) -> None:
    """A store with a random-weights teacher and the `good`/`bad` students: what the bench
    needs of a store (served_models, load_model), built without Ray."""
    from distillery.config import parse_model_spec
    from distillery.models import build_model, model_card, save_model
    from distillery.storage import Store

    store = Store(str(root))
    spec = parse_model_spec({"arch": "cnn1d", "channels": [8, 8], "hidden": 8})
    model = build_model(spec, 40, 10)
    save_model(store, ("teachers", "cnn-teacher", "untrained"), model, model_card(
        model, spec, num_features=40, num_classes=10, role="teacher", spec={"name": "mnist1d"},
        created="2026-01-01T00:00:00Z"))  # older than `bad`, so `bad` is the newest student
    store.write_json({"fingerprint": "untrained"}, "teachers", "cnn-teacher", "latest.json")
    add_students(root)


def test_smoke_run_checks_one_clean_and_one_shifted_window(subprocesses, tmp_path):
    untrained_store(tmp_path / "store")
    output = tmp_path / "monitor.json"
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    done = subprocess.run([sys.executable, str(BENCH), "--smoke", "--store",
                           str(tmp_path / "store"), "--output", str(output)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert [(w["kind"], w["severity"]) for w in result["windows"]] == [
        ("in_distribution", None), ("iid_noise", 0.2)]
    assert set(result["ratios"]) == {"false_alarm_rate", "detection_rate"}
    assert all(0 <= v <= 1 for v in result["ratios"].values())
    for window in result["windows"]:
        assert window["rows"] > window["shadowed_rows"] > 0
        assert window["share_of_drifted_columns"] is not None  # enough rows to compare
        assert window["check_seconds"] > 0 and window["report_bytes"]["html"] > 0
    assert result["sensitivity"][0]["changes"] == {}
    assert result["inputs"]["models"]["student"]["version"] == "bad"  # the newest student
    assert (ROOT / "BENCHMARKS.md").read_text() == benchmarks  # --smoke leaves it alone
    assert not (tmp_path / "store" / "monitor").exists()  # nothing written into the store

