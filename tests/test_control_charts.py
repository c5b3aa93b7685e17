import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from distillery.config import ControlSpec
from distillery.monitoring.control_charts import (
    Series,
    bucket_signals,
    chart,
    class_share_chi_square,
    control_limits,
    ewma,
    ewma_limits,
    plot_control_chart,
)
from distillery.monitoring.request_log import SCHEMA

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

# the columns bucket_signals reads, typed as the request log writes them
LOG_SCHEMA = pa.schema([SCHEMA.field(name) for name in (
    "time", "request_id", "model", "prediction", "confidence", "latency_ms", "agrees")])


def log_table(rows: list[tuple]) -> pa.Table:
    """rows: (seconds after T0, request_id, model, prediction, confidence, latency_ms, agrees)."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * 7
    times = [T0 + dt.timedelta(seconds=s) for s in cols[0]]
    return pa.Table.from_arrays([pa.array(times, LOG_SCHEMA.field(0).type),
                                 *(pa.array(c, f.type) for c, f in
                                   zip(cols[1:], list(LOG_SCHEMA)[1:], strict=True))],
                                schema=LOG_SCHEMA)


def series(values, rows=None) -> Series:
    values = np.asarray(values, dtype=np.float64)
    start = np.datetime64("2026-01-01T00:00:00", "us") + np.arange(len(values)) * np.timedelta64(
        60, "s")
    return Series(start, values, np.full(len(values), 100) if rows is None else np.asarray(rows))


def minutes(*m: int) -> list[np.datetime64]:
    return [np.datetime64("2026-01-01T00:00:00", "us") + np.timedelta64(60 * x, "s") for x in m]


# ---------------------------------------------------------------- limits and EWMA

def test_control_limits_of_a_small_array():
    # mean 2.5; sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    limits = control_limits(np.array([1.0, 2.0, 3.0, 4.0]), k_sigma=2.0)
    sigma = math.sqrt(5 / 3)
    assert limits.mean == 2.5
    assert limits.sigma == pytest.approx(sigma, rel=1e-12)
    assert limits.lower == pytest.approx(2.5 - 2 * sigma, rel=1e-12)
    assert limits.upper == pytest.approx(2.5 + 2 * sigma, rel=1e-12)


def test_a_reference_without_spread_gets_the_sigma_floor_not_zero():
    flat = control_limits(np.full(5, 1.0), k_sigma=3.0)
    assert (flat.sigma, flat.lower, flat.upper) == pytest.approx((1e-3, 0.997, 1.003))
    # the floor scales with the mean's size, so a flat latency of 50 ms gets 0.05 ms
    assert control_limits(np.full(5, 50.0), k_sigma=3.0).sigma == pytest.approx(0.05)
    # points equal to the reference are in control; a real move is still caught
    c = chart(series([1.0] * 4 + [1.0, 1.0, 0.99]), ControlSpec(reference_buckets=4))
    assert c.shewhart_violations.tolist() == [False] * 6 + [True]


def test_ewma_values_for_three_points():
    # z1 = .5*1 + .5*0, z2 = .5*2 + .5*.5, z3 = .5*3 + .5*1.25
    assert ewma(np.array([1.0, 2.0, 3.0]), lam=0.5, start=0.0).tolist() == [0.5, 1.25, 2.125]


def test_ewma_limits_for_three_points_are_exact_and_widen_to_the_asymptote():
    # lam/(2-lam) (1 - (1-lam)^(2i)) at lam = .5: 1/4, 5/16, 21/64
    lower, upper = ewma_limits(mean=10.0, sigma=2.0, lam=0.5, k=3.0, n=3)
    half = [6 * math.sqrt(1 / 4), 6 * math.sqrt(5 / 16), 6 * math.sqrt(21 / 64)]
    assert upper == pytest.approx([10 + h for h in half], rel=1e-12)
    assert lower == pytest.approx([10 - h for h in half], rel=1e-12)
    _, far = ewma_limits(0.0, 1.0, 0.2, 3.0, 200)
    assert far[-1] == pytest.approx(3 * math.sqrt(0.2 / 1.8), rel=1e-12)


def test_chart_finds_a_spike_with_shewhart_and_a_sustained_shift_with_ewma():
    # reference -1, 0, 1: mean 0, sigma 1 exactly; a 3.5-sigma spike at 4, then a 2-sigma shift
    spec = ControlSpec(reference_buckets=3, k_sigma=3.0, ewma_lambda=0.5, ewma_k=3.0)
    c = chart(series([-1, 0, 1, 0, 3.5, 0, 2, 2, 2]), spec)
    assert (c.limits.mean, c.limits.sigma, c.limits.lower, c.limits.upper) == (0, 1, -3, 3)
    assert c.statistic == "value"
    assert c.ewma.tolist() == [-0.5, -0.25, 0.375, 0.1875, 1.84375, 0.921875, 1.4609375,
                               1.73046875, 1.865234375]
    assert np.flatnonzero(c.shewhart_violations).tolist() == [4]
    # the shift stays inside the 3-sigma limits; its EWMA crosses 1.73205 at the third point
    assert np.flatnonzero(c.ewma_violations).tolist() == [4, 8]
    assert np.flatnonzero(c.out_of_control).tolist() == [4, 8]
    assert c.first_violation_after(3) == 4
    assert c.first_violation_after(5) == 8
    assert c.first_violation_after(9) is None


def test_chart_needs_the_reference_buckets():
    with pytest.raises(ValueError, match="2 buckets.*reference_buckets=3"):
        chart(series([1.0, 2.0]), ControlSpec(reference_buckets=3))


# ---------------------------------------------------------------- class share

def test_class_share_chi_square_against_the_smoothed_reference_mix():
    # reference counts (5+3, 5+7) of 20 rows; smoothed p = (8.5, 12.5) / 21
    shares = np.array([[0.5, 0.5], [0.3, 0.7], [0.9, 0.1]])
    x2 = class_share_chi_square(shares, np.array([10, 10, 10]), reference=2)
    assert x2 == pytest.approx([32 / 85, 968 / 2125, 21632 / 2125], rel=1e-12)


def test_a_class_the_reference_never_predicted_is_a_large_finite_shift():
    shares = np.array([[1.0, 0.0]] * 3 + [[0.5, 0.5]])
    x2 = class_share_chi_square(shares, np.array([100, 100, 100, 100]), reference=3)
    assert np.isfinite(x2).all() and x2[-1] > 100 * x2[:3].max()


def test_chart_of_class_share_charts_its_chi_square():
    shares = np.array([[0.5, 0.5], [0.3, 0.7], [0.9, 0.1]])
    c = chart(Series(series([0, 0, 0]).start, shares, np.array([10, 10, 10])),
              ControlSpec(reference_buckets=2))
    assert c.statistic == "chi-square"
    assert c.values == pytest.approx([32 / 85, 968 / 2125, 21632 / 2125], rel=1e-12)
    assert c.shewhart_violations.tolist() == [False, False, True]


# ---------------------------------------------------------------- bucketing

def test_bucket_signals_of_a_small_table():
    table = log_table([
        # minute 0: requests a (2 rows), b (teacher), c
        (1, "a", "student", 0, 0.75, 10.0, True),
        (1, "a", "student", 1, 0.5, 10.0, False),
        (5, "b", "teacher", 2, 1.0, 30.0, None),
        (59, "c", "student", 0, 0.25, 20.0, None),
        # minute 1: one request of 3 rows, one of them shadowed
        (70, "d", "student", 1, 1.0, 8.0, True),
        (70, "d", "student", 1, 0.5, 8.0, None),
        (70, "d", "student", 2, 0.5, 8.0, None),
        # minute 2: a single row, too few for anything
        (130, "e", "student", 0, 0.5, 5.0, True),
    ])
    out = bucket_signals(table, bucket_seconds=60, min_bucket_rows=2, num_classes=3)
    assert list(out) == ["confidence", "agreement", "p99_latency_ms", "class_share"]

    conf = out["confidence"]  # student rows only: (.75 + .5 + .25) / 3, (1 + .5 + .5) / 3
    assert conf.start.tolist() == minutes(0, 1)
    assert conf.values == pytest.approx([0.5, 2 / 3], rel=1e-6)
    assert conf.rows.tolist() == [3, 3]

    agreement = out["agreement"]  # minute 1 has one non-null agrees: left out
    assert agreement.start.tolist() == minutes(0)
    assert agreement.values.tolist() == [0.5]
    assert agreement.rows.tolist() == [2]

    latency = out["p99_latency_ms"]  # requests a, b, c: the ceil(2.97) = 3rd smallest
    assert latency.start.tolist() == minutes(0)  # minute 1 is one request
    assert latency.values.tolist() == [30.0]
    assert latency.rows.tolist() == [3]

    share = out["class_share"]  # all served rows, teacher's too
    assert share.start.tolist() == minutes(0, 1)
    assert share.values == pytest.approx(np.array([[0.5, 0.25, 0.25], [0, 2 / 3, 1 / 3]]),
                                         rel=1e-12)
    assert share.rows.tolist() == [4, 3]


def test_p99_latency_is_nearest_rank_over_distinct_requests():
    # 99 one-row requests at 1..99 ms and one 100-row request at 500 ms: over 100 requests the
    # 99th smallest is 99 (counting rows, the 500 ms request would be the p99)
    rows = [(0, f"r{i}", "student", 0, 0.5, float(i), None) for i in range(1, 100)]
    rows += [(0, "big", "student", 0, 0.5, 500.0, None)] * 100
    latency = bucket_signals(log_table(rows), 60, 1, 2)["p99_latency_ms"]
    assert latency.values.tolist() == [99.0]
    assert latency.rows.tolist() == [100]
    # 150 requests at 1..150 ms: the ceil(148.5) = 149th smallest
    rows = [(0, f"r{i}", "student", 0, 0.5, float(i), None) for i in range(1, 151)]
    assert bucket_signals(log_table(rows), 60, 1, 2)["p99_latency_ms"].values.tolist() == [149.0]


def test_confidence_of_a_teacher_only_table_uses_all_rows():
    table = log_table([(0, "a", "teacher", 0, 0.5, 1.0, None),
                       (0, "b", "teacher", 1, 1.0, 1.0, None)])
    assert bucket_signals(table, 60, 1, 2)["confidence"].values.tolist() == [0.75]


def test_buckets_align_to_the_epoch_not_to_the_first_row():
    table = log_table([(95, "a", "student", 0, 0.5, 1.0, None)])
    out = bucket_signals(table, bucket_seconds=60, min_bucket_rows=1, num_classes=2)
    assert out["confidence"].start.tolist() == minutes(1)


def test_an_empty_log_gives_empty_series():
    out = bucket_signals(log_table([]), 60, 1, 3)
    assert all(len(s.values) == 0 for s in out.values())
    assert out["class_share"].values.shape == (0, 3)


def test_a_prediction_outside_the_classes_is_an_error():
    table = log_table([(0, "a", "student", 3, 0.5, 1.0, None)])
    with pytest.raises(ValueError, match="prediction 3 is not a class of a 3-class model"):
        bucket_signals(table, 60, 1, 3)


# ---------------------------------------------------------------- plot

def test_plot_is_a_png():
    spec = ControlSpec(reference_buckets=3, k_sigma=3.0, ewma_lambda=0.5)
    png = plot_control_chart(chart(series([-1, 0, 1, 0, 3.5, 0, 2, 2, 2]), spec), "confidence")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
