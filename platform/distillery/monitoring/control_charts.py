"""Control charts over the request log: per-bucket signals, Shewhart and EWMA limits, plots.

Pure functions on numpy arrays. The formulas follow Montgomery, *Introduction to Statistical
Quality Control* (Shewhart charts for individual values, ch. 6; the EWMA chart, §9.2):

    Shewhart:  mean +/- k sigma, from the first `reference_buckets` points
    EWMA:      z_0 = mean,  z_i = lam x_i + (1 - lam) z_(i-1)
               limits_i = mean +/- L sigma sqrt(lam / (2 - lam) (1 - (1 - lam)^(2i))),  i = 1..n

sigma is the sample standard deviation (ddof=1) of the reference points. (Montgomery's
individuals chart estimates it from the average moving range; the two agree on an in-control
reference, and the standard deviation is the more efficient estimate.)

The class mix is multivariate: one share per class and bucket. It is charted as one number per
bucket, Pearson's chi-square of the bucket's class counts against the reference's pooled shares
(`class_share_chi_square`); see there for why.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure

from distillery.config import ControlSpec

SIGMA_FLOOR = 1e-3
"""sigma is at least SIGMA_FLOOR x max(|mean|, 1). A reference without spread (agreement of
exactly 1.0 in every bucket, a saturated confidence) would otherwise put both limits on the mean,
and rounding alone would push later points outside. The floor is far below the bucket-to-bucket
spread of any signal averaged over tens of rows, so it never widens a reference that has one."""

SMOOTHING = 0.5
"""Pseudo-count per class in the reference shares of the chi-square: a class the reference never
predicted gets a small share instead of a division by zero, so its appearance counts as a
(large) shift."""


@dataclass(frozen=True)
class Series:
    """One signal per time bucket, for buckets with at least `min_bucket_rows` observations."""

    start: np.ndarray  # (n,) datetime64[us], UTC start of each bucket, ascending
    values: np.ndarray  # (n,) float64; (n, C) for class_share
    rows: np.ndarray  # (n,) int64: observations behind each value (rows, or requests for latency)


@dataclass(frozen=True)
class Limits:
    mean: float
    sigma: float  # sample std (ddof=1) of the reference, floored (SIGMA_FLOOR)
    lower: float  # mean - k sigma
    upper: float  # mean + k sigma


@dataclass(frozen=True)
class Chart:
    """A Shewhart and an EWMA chart of one signal; index i is bucket `start[i]`."""

    start: np.ndarray  # (n,) datetime64[us]
    values: np.ndarray  # (n,) the charted statistic
    statistic: str  # what `values` are: "value", or "chi-square" for class_share
    reference: int  # points [0, reference) set the limits
    limits: Limits
    ewma: np.ndarray  # (n,)
    ewma_lower: np.ndarray  # (n,) time-varying
    ewma_upper: np.ndarray  # (n,)
    shewhart_violations: np.ndarray  # (n,) bool: value outside [lower, upper]
    ewma_violations: np.ndarray  # (n,) bool: ewma outside [ewma_lower, ewma_upper]

    @property
    def out_of_control(self) -> np.ndarray:
        """(n,) bool: a Shewhart or an EWMA violation."""
        return self.shewhart_violations | self.ewma_violations

    def first_violation_after(self, reference: int) -> int | None:
        """Index of the first out-of-control point among points [reference, n); None if none."""
        hits = np.flatnonzero(self.out_of_control[reference:])
        return int(hits[0]) + reference if hits.size else None


# ---------------------------------------------------------------- signals per bucket

def bucket_signals(table: pa.Table, bucket_seconds: float, min_bucket_rows: int,
                   num_classes: int) -> dict[str, Series]:
    """Every signal of `SIGNALS` per time bucket of a request-log table.

    Buckets are [k w, (k + 1) w) in UTC microseconds since the epoch (w = bucket_seconds), so
    charts of overlapping windows share their buckets. Reads the columns time, request_id,
    model, prediction, confidence, latency_ms and agrees. Per bucket:

    - confidence: mean top-1 probability of the rows the student answered. A table without
      student rows (teacher-only serving) uses all rows. The choice is per table, not per
      bucket: mixing teacher rows into a student series wherever a bucket lacks student rows
      would chart the model switch as a shift.
    - agreement: mean of the non-null `agrees` (rows where both models ran).
    - p99_latency_ms: nearest-rank p99 over distinct requests (latency_ms is the request's, on
      each of its rows): the ceil(0.99 n)-th smallest of the bucket's n request latencies.
    - class_share: (n, C) share of each predicted class among all served rows.

    A bucket is left out of a signal when fewer than `min_bucket_rows` observations feed that
    signal (student rows, non-null agrees, requests, rows), so each Series has its own buckets.
    """
    width = round(bucket_seconds * 1e6)
    t = table["time"].to_numpy().astype("datetime64[us]").astype(np.int64)
    keys, bucket = np.unique(t // width, return_inverse=True)
    starts = (keys * width).astype("datetime64[us]")

    student = pc.equal(table["model"], "student").to_numpy(zero_copy_only=False)
    answered = student if student.any() else np.ones(len(t), dtype=bool)
    confidence = table["confidence"].to_numpy().astype(np.float64)
    agrees_known = table["agrees"].is_valid().to_numpy(zero_copy_only=False)
    agrees = pc.fill_null(table["agrees"], False).to_numpy(zero_copy_only=False)
    prediction = table["prediction"].to_numpy()
    if len(prediction) and (prediction.min() < 0 or prediction.max() >= num_classes):
        bad = prediction[(prediction < 0) | (prediction >= num_classes)][0]
        raise ValueError(f"request log: prediction {bad} is not a class of a "
                         f"{num_classes}-class model (0..{num_classes - 1})")

    def means(x: np.ndarray, mask: np.ndarray) -> Series:
        n = np.bincount(bucket[mask], minlength=len(keys))
        total = np.bincount(bucket[mask], weights=x[mask], minlength=len(keys))
        keep = n >= min_bucket_rows
        return Series(starts[keep], total[keep] / n[keep], n[keep])

    rows = np.bincount(bucket, minlength=len(keys))
    counts = np.bincount(bucket * num_classes + prediction,
                         minlength=len(keys) * num_classes).reshape(len(keys), num_classes)
    keep = rows >= min_bucket_rows
    return {
        "confidence": means(confidence, answered),
        "agreement": means(agrees.astype(np.float64), agrees_known),
        "p99_latency_ms": _p99_latency(table, bucket, starts, min_bucket_rows),
        "class_share": Series(starts[keep], counts[keep] / rows[keep, None], rows[keep]),
    }


def _p99_latency(table: pa.Table, bucket: np.ndarray, starts: np.ndarray,
                 min_bucket_rows: int) -> Series:
    """Nearest-rank p99 of the request latencies in each bucket, one latency per request."""
    ids = table["request_id"].to_numpy(zero_copy_only=False)
    _, request = np.unique(ids, return_inverse=True)
    # first row of each (bucket, request): a request's rows all carry its latency
    _, first = np.unique(bucket * len(ids) + request, return_index=True)
    b, latency = bucket[first], table["latency_ms"].to_numpy()[first].astype(np.float64)
    sorted_latency = latency[np.lexsort((latency, b))]  # by bucket, then latency
    n = np.bincount(b, minlength=len(starts))
    keep = n >= min_bucket_rows
    rank = -(-99 * n // 100)  # ceil(0.99 n), 1-based; integer arithmetic, no float rounding
    offset = np.cumsum(n) - n
    return Series(starts[keep], sorted_latency[offset[keep] + rank[keep] - 1], n[keep])


# ---------------------------------------------------------------- limits and EWMA

def control_limits(reference: np.ndarray, k_sigma: float) -> Limits:
    """Shewhart limits mean +/- k sigma of (n,) reference points, n >= 2.

    sigma = sqrt(sum (x_i - mean)^2 / (n - 1)), floored at SIGMA_FLOOR x max(|mean|, 1).
    """
    mean = float(np.mean(reference))
    sigma = max(float(np.std(reference, ddof=1)), SIGMA_FLOOR * max(abs(mean), 1.0))
    return Limits(mean, sigma, mean - k_sigma * sigma, mean + k_sigma * sigma)


def ewma(values: np.ndarray, lam: float, start: float) -> np.ndarray:
    """(n,) z_i = lam x_i + (1 - lam) z_(i-1), z_0 = start (the reference mean)."""
    z = np.empty(len(values))
    prev = start
    for i, x in enumerate(values):
        prev = lam * x + (1 - lam) * prev
        z[i] = prev
    return z


def ewma_limits(mean: float, sigma: float, lam: float, k: float,
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each (n,): the exact limits of z_1..z_n,

        mean +/- k sigma sqrt(lam / (2 - lam) (1 - (1 - lam)^(2i))),  i = 1..n,

    narrow at the start and widening to the asymptotic k sigma sqrt(lam / (2 - lam)).
    """
    i = np.arange(1, n + 1)
    half = k * sigma * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))
    return mean - half, mean + half


def class_share_chi_square(shares: np.ndarray, rows: np.ndarray, reference: int) -> np.ndarray:
    """(n,) Pearson's chi-square of each bucket's class counts against the reference mix.

        p_c  = (N_c + 0.5) / (N + 0.5 C),  N_c = sum over reference buckets of n_b s_bc
        X2_b = n_b sum_c (s_bc - p_c)^2 / p_c

    `shares` (n, C) per bucket, `rows` (n,) the rows n_b behind them; the first `reference`
    buckets pool into p (with SMOOTHING pseudo-counts, so an unseen class has a share).

    Why this statistic: it condenses all C shares into one number whose distribution for a
    stable mix, chi-square with C - 1 degrees of freedom (Marcucci 1985, "Monitoring multinomial
    processes"), does not depend on the bucket size, so buckets of 20 and of 2000 rows chart on
    one scale. Charting each class's share, or the largest per-class z, would need a per-class
    sigma that 20 reference buckets estimate poorly and that is zero for a rare class. The
    chart's limits still come from the reference buckets' chi-squares, not from a chi-square
    quantile, so the extra wander of real traffic sets them.
    """
    counts = shares[:reference] * rows[:reference, None]
    p = (counts.sum(axis=0) + SMOOTHING) / (rows[:reference].sum() + SMOOTHING * shares.shape[1])
    return rows * ((shares - p) ** 2 / p).sum(axis=1)


def chart(series: Series, spec: ControlSpec) -> Chart:
    """Shewhart and EWMA charts of a series; its first `spec.reference_buckets` points set the
    limits. A (n, C) class-share series is charted as its chi-square (class_share_chi_square)."""
    n, reference = len(series.values), spec.reference_buckets
    if n < reference:
        raise ValueError(f"control chart: {n} buckets with at least min_bucket_rows rows, but "
                         f"control.reference_buckets={reference} are needed for the limits")
    if series.values.ndim == 2:
        values = class_share_chi_square(series.values, series.rows, reference)
        statistic = "chi-square"
    else:
        values = series.values.astype(np.float64)
        statistic = "value"
    limits = control_limits(values[:reference], spec.k_sigma)
    z = ewma(values, spec.ewma_lambda, limits.mean)
    lower, upper = ewma_limits(limits.mean, limits.sigma, spec.ewma_lambda, spec.ewma_k, n)
    return Chart(start=series.start, values=values, statistic=statistic, reference=reference,
                 limits=limits, ewma=z, ewma_lower=lower, ewma_upper=upper,
                 shewhart_violations=(values < limits.lower) | (values > limits.upper),
                 ewma_violations=(z < lower) | (z > upper))


# ---------------------------------------------------------------- plot

def plot_control_chart(chart: Chart, title: str) -> bytes:
    """PNG of the chart: the points with centre line and k-sigma limits above, the EWMA with
    its limits below; out-of-control points in red, the reference period shaded.

    matplotlib's object API (a `Figure`, no pyplot) renders with Agg and keeps no global state,
    so this is safe in any process or thread.
    """
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    x, lim = chart.start, chart.limits
    for ax in (top, bottom):
        ax.axvspan(x[0], x[chart.reference - 1], color="#999999", alpha=0.15, linewidth=0)
        ax.axhline(lim.mean, color="#333333", linewidth=1)
    top.plot(x, chart.values, "o-", color="#1f77b4", markersize=3, linewidth=1)
    top.axhline(lim.lower, color="#d62728", linestyle="--", linewidth=1,
                label=f"mean +/- {(lim.upper - lim.mean) / lim.sigma:g} sigma "
                      f"(first {chart.reference} buckets)")
    top.axhline(lim.upper, color="#d62728", linestyle="--", linewidth=1)
    bad = chart.shewhart_violations
    top.plot(x[bad], chart.values[bad], "o", color="#d62728", markersize=5)
    top.set(title=title, ylabel=chart.statistic)
    top.legend(fontsize=7, loc="upper left")
    bottom.plot(x, chart.ewma, "-", color="#2ca02c", linewidth=1.2)
    bottom.plot(x, chart.ewma_lower, "--", color="#d62728", linewidth=1)
    bottom.plot(x, chart.ewma_upper, "--", color="#d62728", linewidth=1)
    bad = chart.ewma_violations
    bottom.plot(x[bad], chart.ewma[bad], "o", color="#d62728", markersize=5)
    bottom.set(ylabel="EWMA", xlabel="bucket start (UTC)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return buf.getvalue()
