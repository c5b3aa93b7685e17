"""Drift reports: frames from logits and the request log, Evidently's verdicts, the store layout.

An Evidently run costs more the more columns it compares, so only the MNIST-1D test runs the
full width (its 44).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mnist1d.data import get_dataset_args, make_dataset

from distillery.config import DriftSpec, StatTest
from distillery.monitoring.drift import (
    NotEnoughRows,
    drift_report,
    frame,
    reference_frame,
    save_report,
    window_frame,
    window_label,
)
from distillery.monitoring.request_log import SCHEMA, Entry, to_table
from distillery.storage import Store
from distillery.store_layout import MONITOR_REPORTS

SMALL = DriftSpec(min_rows=200)  # windows of a few hundred rows keep the tests fast


def gaussian_frame(seed: int, n: int, shift: float = 0.0, agree_rate: float = 0.9,
                   known: float = 1.0) -> pd.DataFrame:
    """3 standard-normal inputs (x0 shifted by `shift` sigmas), 10 uniform classes; `agrees` is
    True with `agree_rate` and known on the first `known` share of rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[:, 0] += shift
    agrees = (rng.random(n) < agree_rate).astype(float)
    agrees[int(known * n):] = np.nan
    return frame(x, rng.integers(0, 10, n), rng.random(n), rng.random(n), agrees)


def test_reference_frame_takes_outputs_from_the_monitored_models_logits():
    inputs = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    student = np.array([[0.0, 0.0], [0.0, math.log(3.0)]])  # p = (1/2, 1/2), (1/4, 3/4)
    teacher = np.array([[1.0, 0.0], [1.0, 0.0]])
    df = reference_frame(inputs, student, teacher)
    assert list(df.columns) == ["x0", "x1", "prediction", "confidence", "entropy", "agrees"]
    assert df[["x0", "x1"]].to_numpy().tolist() == inputs.tolist()
    assert df["prediction"].tolist() == [0, 1]
    np.testing.assert_allclose(df["confidence"], [0.5, 0.75], rtol=1e-6)
    np.testing.assert_allclose(
        df["entropy"], [math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))], rtol=1e-6)
    assert df["agrees"].tolist() == [True, False]
    assert "agrees" not in reference_frame(inputs, student).columns


def test_frame_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match=r"confidence: expected shape \(2,\)"):
        frame(np.zeros((2, 3)), np.zeros(2), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="agrees: expected booleans or 0/1"):
        frame(np.zeros((2, 3)), np.zeros(2), np.zeros(2), np.zeros(2), np.array([0.5, 1.0]))


def test_window_frame_reads_request_log_rows():
    probs = np.array([[0.8, 0.2], [0.4, 0.6]], np.float32)
    inputs = np.arange(6, dtype=np.float32).reshape(2, 3)
    entries = [Entry(0.0, "a", "predict", "student", "s1", inputs, probs, 1.0, shadow_probs=probs),
               Entry(1.0, "b", "predict", "student", "s1", inputs, probs[::-1], 1.0)]
    table = to_table(entries)
    df = window_frame(table)
    assert df[["x0", "x1", "x2"]].to_numpy().tolist() == [[0, 1, 2], [3, 4, 5]] * 2
    assert df["prediction"].tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(df["confidence"], [0.8, 0.6, 0.6, 0.8])
    assert df["agrees"].tolist() == [True, True, pd.NA, pd.NA]
    # read_requests concatenates files and filters by time: chunked, offset arrays
    pd.testing.assert_frame_equal(window_frame(pa.concat_tables([table, table]).slice(3, 2)),
                                  pd.concat([df[3:], df[:1]], ignore_index=True))
    assert len(window_frame(SCHEMA.empty_table())) == 0


def mnist1d(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = n, seed, 1.0
    data = make_dataset(args)
    return data["x"].astype(np.float32), data["y"]


def test_mnist1d_window_drifts_only_when_shifted():
    x, y = mnist1d(2000, seed=0)
    # A least-squares linear "teacher": cheap, and its outputs move with its inputs.
    weights = np.linalg.lstsq(np.c_[x, np.ones(len(x))], 8 * np.eye(10)[y], rcond=None)[0]
    outputs = lambda x: np.c_[x, np.ones(len(x))] @ weights  # noqa: E731
    reference = reference_frame(x, outputs(x))
    live, _ = mnist1d(500, seed=1)
    shifted = live.copy()
    shifted[:, :30] += x[:, :30].std(axis=0)  # 1 sigma on x0..x29

    same = drift_report(reference, reference_frame(live, outputs(live)), SMALL).summary
    assert not same["dataset_drift"]
    assert same["share_of_drifted_columns"] < 0.2  # well under it for live seeds 1 to 8
    assert same["number_of_columns"] == 43  # 40 inputs, prediction, confidence, entropy
    assert same["method"] == {"numerical": {"wasserstein": 0.1},
                              "categorical": {"jensenshannon": 0.1}}

    moved = drift_report(reference, reference_frame(shifted, outputs(shifted)), SMALL).summary
    assert moved["dataset_drift"]
    assert moved["share_of_drifted_columns"] > 0.6  # 30 of 43 columns moved, outputs with them
    named = [c["column"] for c in moved["drifted_columns"]]
    assert len(named) == 10
    assert {c for c in named if c.startswith("x")} <= {f"x{i}" for i in range(30)}
    assert moved["rows"] == {"reference": 2000, "current": 500}


def test_spec_methods_thresholds_and_drift_share_reach_evidently():
    spec = DriftSpec(min_rows=200, numerical=StatTest(method="ks", threshold=0.001),
                     categorical=StatTest(method="chisquare", threshold=0.005),
                     drift_share=0.1)
    result = drift_report(gaussian_frame(0, 2000), gaussian_frame(1, 300, shift=1.0), spec)
    summary = result.summary
    assert summary["method"] == {"numerical": {"ks": 0.001}, "categorical": {"chisquare": 0.005}}
    top = summary["drifted_columns"][0]
    assert (top["column"], top["method"], top["threshold"]) == ("x0", "ks", 0.001)
    assert top["score"] < 1e-10  # a KS p-value
    # only x0 drifts: 1 of 7 columns is past drift_share = 0.1
    assert summary["number_of_drifted_columns"] == 1
    assert summary["dataset_drift"] and summary["drift_share"] == 0.1
    assert '"method": "ks"' in result.json and "<html" in result.html


@pytest.mark.parametrize("kind,method,match", [
    ("numerical", "nope", "No stattest found of name nope"),
    ("categorical", "ks", "Stattest ks isn't applicable to feature of type cat"),
], ids=["unknown", "wrong-type"])
def test_unknown_methods_name_the_spec_field(kind, method, match):
    spec = DriftSpec(min_rows=200, **{kind: StatTest(method=method)})
    with pytest.raises(ValueError, match=f"monitor.drift.{kind}.method: {match}"):
        drift_report(gaussian_frame(0, 300), gaussian_frame(1, 300), spec)


def test_too_few_rows_is_not_enough_traffic():
    with pytest.raises(NotEnoughRows, match="has 199 rows; .* monitor.drift.min_rows=200"):
        drift_report(gaussian_frame(0, 2000), gaussian_frame(1, 199), SMALL)


def test_columns_must_match():
    other = gaussian_frame(1, 300).rename(columns={"x2": "x3"})
    with pytest.raises(ValueError, match=r"differ in columns \['x2', 'x3'\]"):
        drift_report(gaussian_frame(0, 2000), other, SMALL)


def test_agrees_compared_on_known_rows_only():
    # 900 of 1200 rows unknown; the 300 known ones agree as often as the reference does.
    summary = drift_report(gaussian_frame(0, 2000), gaussian_frame(1, 1200, known=0.25),
                           SMALL).summary
    assert summary["agrees"] == {"compared": True, "rows": {"reference": 2000, "current": 300},
                                 "reason": None}
    assert "agrees" not in [c["column"] for c in summary["drifted_columns"]]
    # the known rows now agree half the time: agreement drifts
    summary = drift_report(gaussian_frame(0, 2000),
                           gaussian_frame(1, 1200, agree_rate=0.5, known=0.25), SMALL).summary
    assert [c["column"] for c in summary["drifted_columns"]] == ["agrees"]


@pytest.mark.parametrize("reference,current,reason", [
    (gaussian_frame(0, 2000), gaussian_frame(1, 300, known=0.0), "0 rows of the window"),
    (gaussian_frame(0, 2000), gaussian_frame(1, 300, known=0.5), "150 rows of the window"),
    (gaussian_frame(0, 2000).drop(columns="agrees"), gaussian_frame(1, 300),
     "the reference has no student-teacher agreement"),
], ids=["none-shadowed", "too-few-shadowed", "no-student-in-reference"])
def test_agrees_dropped_when_it_cannot_be_compared(reference, current, reason):
    result = drift_report(reference, current, SMALL)
    assert not result.summary["agrees"]["compared"]
    assert result.summary["agrees"]["reason"].startswith(reason)
    assert result.summary["number_of_columns"] == 6
    assert "agrees" not in result.json


def test_window_label_is_utc_to_the_second():
    start = datetime(2026, 11, 29, 21, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert window_label(start, start + timedelta(hours=1)) == "20261129T200030Z-20261129T210030Z"
    with pytest.raises(ValueError, match="has no time zone"):
        window_label(datetime(2026, 11, 29, 20), datetime(2026, 11, 29, 21))
    with pytest.raises(ValueError, match="is not after its start"):
        window_label(start, start)


def test_save_report_writes_three_files(tmp_path):
    result = drift_report(gaussian_frame(0, 2000), gaussian_frame(1, 300, shift=1.0), SMALL)
    store = Store(str(tmp_path))
    uris = save_report(store, "20261129T2000Z-20261129T2100Z", result)
    folder = tmp_path / "monitor" / "reports" / "20261129T2000Z-20261129T2100Z"
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json",
                                                        "summary.json"]  # no temp files left
    assert uris == {"html": str(folder / "report.html"), "json": str(folder / "report.json"),
                    "summary": str(folder / "summary.json")}
    assert json.loads((folder / "summary.json").read_text()) == result.summary
    assert (folder / "report.json").read_text() == result.json
    assert (folder / "report.html").read_text() == result.html


def test_pruning_keeps_the_latest_report_folders(tmp_path):
    from distillery.monitoring.check import prune_reports

    store = Store(str(tmp_path))
    labels = [window_label(datetime(2026, 11, 30, h, tzinfo=timezone.utc),
                           datetime(2026, 11, 30, h, 5, tzinfo=timezone.utc)) for h in (9, 1, 5)]
    for label in labels:
        store.write_json({}, *MONITOR_REPORTS, label, "check.json")
    assert prune_reports(store, 2) == [labels[1]]  # the 01:00 window, the earliest
    assert store.listdir(*MONITOR_REPORTS) == sorted([labels[0], labels[2]])
    assert prune_reports(store, 2) == []


def test_pruning_spares_the_report_just_written_of_an_older_window(tmp_path):
    from distillery.monitoring.check import prune_reports

    store = Store(str(tmp_path))
    labels = [window_label(datetime(2026, 11, 30, h, tzinfo=timezone.utc),
                           datetime(2026, 11, 30, h, 5, tzinfo=timezone.utc)) for h in (1, 2, 3)]
    for label in labels:
        store.write_json({}, *MONITOR_REPORTS, label, "check.json")
    assert prune_reports(store, 1, spare=labels[0]) == [labels[1]]
    assert store.listdir(*MONITOR_REPORTS) == [labels[0], labels[2]]
