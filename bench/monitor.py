"""Monitoring bench: how often the reference spec's checks alarm on in-distribution traffic, and
how fast they catch the evaluation suite's generator shifts. Writes bench/results/monitor.json
and the "monitor" section of BENCHMARKS.md.

    .venv/bin/python bench/monitor.py [--store ./runs] [--output bench/results/monitor.json]
        [--set key.path=value ...] [--smoke]

Models: the teacher and the newest student of the quickstart pipeline in `--store` (what `make
demo` writes). Nothing is written there: the two models are copied into a scratch store, and
every synthetic request log, report and chart goes there.

A window is what the Serve app's scheduled check reads: `monitor.window_s` (3600 s = 60 buckets
of `control.bucket_seconds`), of which the first `control.reference_buckets` (20) set the chart
limits and the rest (40) are monitored. Traffic: requests arrive as a Poisson process of
REQUESTS_PER_MINUTE, each with 1 to MAX_ROWS rows (uniform), every one answered by the student;
SHADOW_FRACTION of them are mirrored to the teacher, so `agrees` is known on their rows. Latency
is drawn (lognormal), not measured: no default rule reads it. Rows are fresh MNIST-1D rows, a new
generator seed per window (the models trained on seed 42); the generator standardises each batch
it makes by the batch's own mean and std, as it did for the training data.

- In-distribution windows: every row from the default generator. An alarm is any alert; the
  false-alarm rate is windows with an alarm / windows.
- Shifted windows: the rows after the reference buckets come from the generator with one
  argument of `evaluate.shifts` (the mnist1d kinds) set to a severity. Detection is any alert;
  buckets to detect counts the buckets from the shift's start to the first out-of-control point
  of the confidence chart (0: the first shifted bucket). On a clean window the same count says
  where the false alarm came.

Each window is checked by `run_check(spec, start, end, send_alerts=False)`, timed. Sensitivity:
the windows' bucket series are charted again under other control settings (VARIANTS; pure
functions, the same traffic), with the drift alerts as measured. `--smoke`: one clean and one
shifted window of 10 buckets (seconds, for the test; BENCHMARKS.md untouched).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import ROOT, machine, results_path, update_section  # noqa: E402

from distillery.compare import write_result  # noqa: E402
from distillery.config import GENERATOR_SHIFTS, MonitorSpec, PipelineSpec, load_spec  # noqa: E402
from distillery.models import load_model  # noqa: E402
from distillery.models.artifacts import library_versions  # noqa: E402
from distillery.monitoring.alerts import evaluate_rules  # noqa: E402
from distillery.monitoring.check import CheckResult, run_check  # noqa: E402
from distillery.monitoring.control_charts import Chart, Series, bucket_signals, chart  # noqa: E402
from distillery.monitoring.request_log import Entry, RequestLog, read_requests  # noqa: E402
from distillery.storage import Store  # noqa: E402
from serve import models_or_exit, scratch_store  # noqa: E402

SPEC = ROOT / "jobs/configs/mnist1d.yaml"
IN_DISTRIBUTION = 20  # windows; the acceptance: a false-alarm rate over 20 of them
SHIFTED_PER_SEVERITY = 1  # windows per (shift kind, severity)
REQUESTS_PER_MINUTE = 20.0
MAX_ROWS = 5  # rows per request: uniform on 1..5, mean 3, so ~60 rows per 60 s bucket
SHADOW_FRACTION = 0.5  # ~30 rows with `agrees` per bucket: above control.min_bucket_rows (20)
LATENCY_MS = (2.0, 0.3)  # lognormal: median, sigma of the log
SEEDS = {"in_distribution": 1000, "shifted": 2000}  # generator seeds: far from 42 (data), 7
DAY0 = datetime(2026, 1, 1, tzinfo=timezone.utc)  # window i starts DAY0 + i days
# --smoke: a 10-bucket window (4 reference) and a reference without the 50k transfer rows
SMOKE = ["monitor.window_s=600", "monitor.control.reference_buckets=4",
         "monitor.drift.reference_rows=500", "data.num_samples=1000", "data.transfer=null"]
VARIANTS = [  # monitor.control fields changed; the first is the spec as loaded
    {},
    {"k_sigma": 3.5, "ewma_k": 3.5},
    {"k_sigma": 4.0, "ewma_k": 4.0},
    {"k_sigma": 4.5, "ewma_k": 4.5},
]


# ---------------------------------------------------------------- traffic

@dataclass(frozen=True)
class Traffic:
    """One window's requests, in time order."""

    seconds: np.ndarray  # (R,) float64, from the window's start
    rows: np.ndarray  # (R,) int64, rows per request
    shadowed: np.ndarray  # (R,) bool: mirrored to the teacher
    latency_ms: np.ndarray  # (R,) float64


def traffic(rng: np.random.Generator, seconds: float) -> Traffic:
    """Poisson arrivals at REQUESTS_PER_MINUTE over [0, seconds): R ~ Poisson(rate x seconds)
    requests at uniform times, each with uniform 1..MAX_ROWS rows, SHADOW_FRACTION shadowed."""
    count = rng.poisson(REQUESTS_PER_MINUTE / 60 * seconds)
    return Traffic(np.sort(rng.uniform(0, seconds, count)), rng.integers(1, MAX_ROWS + 1, count),
                   rng.random(count) < SHADOW_FRACTION,
                   rng.lognormal(math.log(LATENCY_MS[0]), LATENCY_MS[1], count))


def fresh_rows(n: int, seed: int, parameter: str | None = None,
               value: float | None = None) -> np.ndarray:
    """(n, 40) float32 MNIST-1D rows from the generator with `seed` and, if given, one argument
    (GENERATOR_SHIFTS) set to `value`; generated in a multiple of 10 rows (the generator makes
    n // 10 per class), shuffled, the first n kept."""
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = -(-n // 10) * 10, seed, 1.0
    if parameter is not None:
        setattr(args, parameter, int(value) if parameter == "max_translation" else value)
    return make_dataset(args)["x"][:n].astype(np.float32)


def entries(load: Traffic, start: datetime, x: np.ndarray, student: np.ndarray,
            teacher: np.ndarray, endpoint: str, version: str) -> list[Entry]:
    """The request-log entries of `load` over rows x (N, D), N = load.rows.sum(), in order;
    `student`/`teacher` (N, C) the two models' probabilities on them."""
    ends = np.cumsum(load.rows)
    return [Entry(start.timestamp() + t, f"{start:%Y%m%d}-{k}", endpoint, "student", version,
                  x[end - n:end], student[end - n:end], float(ms),
                  teacher[end - n:end] if shadowed else None)
            for k, (t, n, shadowed, ms, end) in enumerate(zip(
                load.seconds, load.rows, load.shadowed, load.latency_ms, ends, strict=True))]


# ---------------------------------------------------------------- one window

@dataclass(frozen=True)
class Window:
    kind: str  # "in_distribution" or a shift kind
    severity: float | None
    seed: int
    start: datetime


def windows(spec: PipelineSpec, smoke: bool) -> list[Window]:
    """IN_DISTRIBUTION clean windows, then SHIFTED_PER_SEVERITY per mnist1d shift and severity
    of `evaluate.shifts`; with `smoke`, one clean window and the first shift at its strongest."""
    generated = [s for s in spec.evaluate.shifts if s.kind in GENERATOR_SHIFTS]
    shifts = [(s.kind, v) for s in generated for v in s.severities
              for _ in range(SHIFTED_PER_SEVERITY)]
    if smoke:
        shifts = [(generated[0].kind, generated[0].severities[-1])]
    clean = [("in_distribution", None)] * (1 if smoke else IN_DISTRIBUTION)
    return [Window(kind, severity, SEEDS["shifted" if severity else "in_distribution"] + i,
                   DAY0 + timedelta(days=i))
            for i, (kind, severity) in enumerate(clean + shifts)]


def run_window(spec: PipelineSpec, window: Window, models: dict, version: str) -> tuple[dict, dict]:
    """Log one window's traffic, check it; (its record, its bucket series for the sensitivity)."""
    control = spec.monitor.control
    seconds = spec.monitor.window_s
    shift_at = control.reference_buckets * control.bucket_seconds  # seconds into the window
    rng = np.random.default_rng(window.seed)
    load = traffic(rng, seconds)
    before = int(load.rows[load.seconds < shift_at].sum())
    total = int(load.rows.sum())
    if window.severity is None:
        x = fresh_rows(total, window.seed)
    else:
        parameter = GENERATOR_SHIFTS[window.kind]
        # a second seed for the shifted rows: the same seed would redraw the same digits
        x = np.concatenate([fresh_rows(before, window.seed),
                            fresh_rows(total - before, window.seed + 10_000, parameter,
                                       window.severity)])
    with torch.inference_mode():
        probs = {arm: torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
                 for arm, model in models.items()}
    store = Store(spec.store)
    RequestLog(store, spec.monitor.request_log).write(
        entries(load, window.start, x, probs["student"], probs["teacher"], spec.name, version))
    end = window.start + timedelta(seconds=seconds)
    began = time.perf_counter()
    check = run_check(spec, window.start, end, send_alerts=False)
    elapsed = time.perf_counter() - began
    series = bucket_signals(read_requests(store, window.start, end), control.bucket_seconds,
                            control.min_bucket_rows, probs["student"].shape[1])
    record = {
        "kind": window.kind, "severity": window.severity, "seed": window.seed,
        "window": check.window, "requests": len(load.rows), "rows": check.rows,
        "shadowed_rows": int(load.rows[load.shadowed].sum()),
        "alarm": bool(check.alerts), "alerts": [a.rule for a in check.alerts],
        "share_of_drifted_columns": None if check.drift is None
        else check.drift["share_of_drifted_columns"],
        "drifted_columns": [c["column"] for c in (check.drift or {}).get("drifted_columns", [])],
        "buckets_to_detect": buckets_after(check.charts.get("confidence"), window.start + timedelta(
            seconds=shift_at), control.bucket_seconds),
        "confidence_chart": out_of_control(check.charts.get("confidence")),
        "chart_points": {name: len(c.values) for name, c in check.charts.items()},
        "check_seconds": elapsed, "report_bytes": report_bytes(check),
    }
    return record, {"series": series, "drift": check.drift, "label": check.window}


def buckets_after(confidence: Chart | None, shift: datetime, bucket_seconds: float) -> int | None:
    """Buckets from `shift` to the chart's first out-of-control point after its reference
    (0: the bucket starting at `shift`); None without a chart or a violation."""
    if confidence is None or (i := confidence.first_violation_after(confidence.reference)) is None:
        return None
    at = confidence.start[i].astype("datetime64[us]").astype(np.int64) / 1e6  # unix seconds
    return int(round((at - shift.timestamp()) / bucket_seconds))


def out_of_control(confidence: Chart | None) -> dict[str, bool]:
    """Whether any point after the reference broke the Shewhart or the EWMA limits."""
    if confidence is None:
        return {"shewhart": False, "ewma": False}
    after = slice(confidence.reference, None)
    return {"shewhart": bool(confidence.shewhart_violations[after].any()),
            "ewma": bool(confidence.ewma_violations[after].any())}


def report_bytes(check: CheckResult) -> dict[str, int]:
    """Size of each file the check wrote (the scratch store is local)."""
    return {name: Path(uri).stat().st_size for name, uri in check.files.items()}


# ---------------------------------------------------------------- summary

def alerts_under(monitor: MonitorSpec, changes: dict, kept: dict) -> list[str]:
    """The rules that fire on a window's series (`kept`, from run_window) when monitor.control
    takes `changes`: run_check's charts and rules, the drift summary as measured."""
    control = monitor.control.model_copy(update=changes)
    series: dict[str, Series] = kept["series"]
    charts = {name: chart(series[name], control) for name in control.signals
              if len(series[name].values) > control.reference_buckets}
    return [a.rule for a in evaluate_rules(monitor.alerts.rules, kept["drift"], charts,
                                           kept["label"])]


def rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(records: list[dict], rules: list[str]) -> dict:
    """False alarms on the clean windows (overall and per rule), the drifted-column shares,
    detection per shift kind and severity, buckets to detect, check seconds and report bytes."""
    clean = [r for r in records if r["kind"] == "in_distribution"]
    shifted = [r for r in records if r["kind"] != "in_distribution"]
    detection = {}
    for kind in dict.fromkeys(r["kind"] for r in shifted):
        group = [r for r in shifted if r["kind"] == kind]
        detection[kind] = {
            "rate": rate([r["alarm"] for r in group]), "windows": len(group),
            "per_rule": {rule: rate([rule in r["alerts"] for r in group]) for rule in rules},
            "per_severity": {str(s): {
                "rate": rate([r["alarm"] for r in group if r["severity"] == s]),
                "buckets_to_detect": [r["buckets_to_detect"] for r in group
                                      if r["severity"] == s]}
                for s in dict.fromkeys(r["severity"] for r in group)}}
    shares = [r["share_of_drifted_columns"] for r in clean
              if r["share_of_drifted_columns"] is not None]
    return {
        "false_alarm": {"rate": rate([r["alarm"] for r in clean]), "windows": len(clean),
                        "alarms": sum(r["alarm"] for r in clean),
                        "per_rule": {rule: rate([rule in r["alerts"] for r in clean])
                                     for rule in rules},
                        "confidence_chart": {part: rate([r["confidence_chart"][part]
                                                         for r in clean])
                                             for part in ("shewhart", "ewma")},
                        "buckets_to_false_alarm": [r["buckets_to_detect"] for r in clean]},
        "share_of_drifted_columns": {**(spread(shares) or {}), "values": shares},
        "drifted_columns_in_distribution": dict(Counter(
            c for r in clean for c in r["drifted_columns"]).most_common()),
        "detection": {"rate": rate([r["alarm"] for r in shifted]), "windows": len(shifted),
                      "per_kind": detection,
                      "buckets_to_detect": spread([r["buckets_to_detect"] for r in shifted
                                                   if r["buckets_to_detect"] is not None])},
        # the first check also builds the reference (Evidently's first run, the training split)
        "check_seconds": {"first": records[0]["check_seconds"],
                          "rest": spread([r["check_seconds"] for r in records[1:]])},
        "report_bytes": {name: statistics.median(r["report_bytes"][name] for r in records
                                                 if name in r["report_bytes"])
                         for name in dict.fromkeys(n for r in records for n in r["report_bytes"])},
    }


def sensitivity(monitor: MonitorSpec, records: list[dict], kept: list[dict]) -> list[dict]:
    """[{changes, false_alarm_rate, detection_rate, false_alarm_per_rule}] with each of
    VARIANTS' control settings applied to every window's series."""
    rules = [rule.name for rule in monitor.alerts.rules]
    out = []
    for changes in VARIANTS:
        fired = [alerts_under(monitor, changes, k) for k in kept]
        clean = [f for f, r in zip(fired, records, strict=True) if r["kind"] == "in_distribution"]
        shifted = [f for f, r in zip(fired, records, strict=True)
                   if r["kind"] != "in_distribution"]
        out.append({"changes": changes, "false_alarm_rate": rate([bool(f) for f in clean]),
                    "detection_rate": rate([bool(f) for f in shifted]),
                    "false_alarm_per_rule": {rule: rate([rule in f for f in clean])
                                             for rule in rules}})
    return out


def format_markdown(result: dict) -> str:
    inputs, summary = result["inputs"], result["summary"]
    false, detection = summary["false_alarm"], summary["detection"]
    rules = inputs["rules"]
    lines = [
        f"{result['machine']['cpus']} CPUs ({result['machine']['platform']}), Evidently "
        f"{result['versions']['evidently']}, torch {result['versions']['torch']}. Teacher "
        f"{inputs['models']['teacher']['version']} ({inputs['models']['teacher']['params']:,} "
        f"params), student {inputs['models']['student']['version']} "
        f"({inputs['models']['student']['params']:,} params), `{inputs['spec']}` monitor "
        f"defaults{' with ' + ' '.join(inputs['overrides']) if inputs['overrides'] else ''}.",
        "",
        f"Each window: {inputs['window_buckets']} buckets of {inputs['bucket_seconds']:g} s "
        f"({inputs['reference_buckets']} reference), {inputs['traffic']['requests_per_minute']:g} "
        f"requests/min of 1-{inputs['traffic']['max_rows']} rows (~"
        f"{statistics.median(r['rows'] for r in result['windows']):,.0f} rows), all answered "
        f"by the student, {inputs['traffic']['shadow_fraction']:.0%} shadowed by the teacher; "
        "fresh MNIST-1D rows, a new generator seed per window. Shifted windows switch to the "
        "shifted generator after the reference buckets. An alarm is any alert of "
        "`run_check`.",
        "",
        f"**False alarms: {false['alarms']} of {false['windows']} in-distribution windows "
        f"({false['rate']:.0%}).** Detection: {detection['rate']:.0%} of "
        f"{detection['windows']} shifted windows.",
        "",
        "| rule | false-alarm rate | " + " | ".join(
            f"detected: {k}" for k in detection["per_kind"]) + " |",
        "|---|---:|" + "---:|" * len(detection["per_kind"]),
    ]
    for rule in rules:
        lines.append(f"| {rule} | {false['per_rule'][rule]:.0%} | " + " | ".join(
            f"{d['per_rule'][rule]:.0%}" for d in detection["per_kind"].values()) + " |")
    lines.append("| any | " + f"{false['rate']:.0%} | " + " | ".join(
        f"{d['rate']:.0%}" for d in detection["per_kind"].values()) + " |")
    lines += ["", "| shift | severity (default) | detected | buckets to detect (confidence) |",
              "|---|---:|---:|---|"]
    for kind, d in detection["per_kind"].items():
        for severity, s in d["per_severity"].items():
            buckets = ", ".join("-" if b is None else str(b) for b in s["buckets_to_detect"])
            lines.append(f"| {kind} | {severity} ({inputs['shift_defaults'][kind]:g}) | "
                         f"{s['rate']:.0%} | {buckets} |")
    share = summary["share_of_drifted_columns"]
    seconds = summary["check_seconds"]
    size = summary["report_bytes"]
    drifted = ", ".join(f"{c} ({n}/{false['windows']})"
                        for c, n in summary["drifted_columns_in_distribution"].items())
    lines += [
        "",
        f"On in-distribution windows the confidence chart left its limits after the reference "
        f"in {false['confidence_chart']['shewhart']:.0%} of windows (Shewhart, "
        f"k_sigma={inputs['monitor']['control']['k_sigma']:g}) and "
        f"{false['confidence_chart']['ewma']:.0%} (EWMA, "
        f"ewma_k={inputs['monitor']['control']['ewma_k']:g}). Share of drifted columns: "
        + (f"median {share['median']:.3f} (min {share['min']:.3f}, max {share['max']:.3f}); "
           f"columns that drifted: {drifted or 'none'}." if share["values"] else
           "not compared (too few rows)."),
        "",
        f"Time per check: {seconds['rest']['median']:.2f} s median ({seconds['rest']['min']:.2f}"
        f"-{seconds['rest']['max']:.2f}); the first, which builds the reference, "
        f"{seconds['first']:.2f} s. Files per check (median bytes): "
        + ", ".join(f"{name} {b:,.0f}" for name, b in size.items()) + ".",
    ]
    lines += ["", "The same windows' series charted under other `monitor.control` settings "
              "(drift alerts as measured):", "",
              "| control settings | false-alarm rate | detection rate |", "|---|---:|---:|"]
    for v in result["sensitivity"]:
        changes = ", ".join(f"{k}={val:g}" for k, val in v["changes"].items())
        lines.append(f"| {changes or 'the spec'} | {v['false_alarm_rate']:.0%} | "
                     f"{v['detection_rate']:.0%} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./runs")
    parser.add_argument("--output", default=None, help="default: bench/results/monitor.json "
                        "(bench/results/smoke/ with --smoke)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    overrides = [*(SMOKE if args.smoke else []), *args.overrides]
    spec = load_spec(SPEC, [f"store={args.store}", *overrides])
    parts, cards = models_or_exit(spec, "bench/monitor.py", args.store)
    control = spec.monitor.control
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        spec = load_spec(SPEC, [f"store={scratch_store(spec, Path(scratch), parts)}", *overrides])
        store = Store(spec.store)
        models = {arm: load_model(store, where)[0] for arm, where in parts.items()}
        records, kept = [], []
        for window in windows(spec, args.smoke):
            record, series = run_window(spec, window, models, parts["student"][-1])
            if record["alerts"] != alerts_under(spec.monitor, {}, series):
                raise AssertionError(f"{record['window']}: re-charting the series gives other "
                                     f"alerts than run_check ({record['alerts']})")
            records.append(record)
            kept.append(series)
            print(f"{record['kind']:<16} {record['severity'] or '':<5} {record['rows']:>5} rows"
                  f"  share {record['share_of_drifted_columns'] or 0:.3f}  "
                  f"alerts {record['alerts']}  confidence at {record['buckets_to_detect']}  "
                  f"{record['check_seconds']:.2f} s", flush=True)
    rules = [rule.name for rule in spec.monitor.alerts.rules]
    summary = summarize(records, rules)
    result = {
        "bench": "monitor", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "versions": {**library_versions(), "evidently": version("evidently")},
        "seconds": time.perf_counter() - started,
        "inputs": {
            "store": args.store, "spec": str(SPEC.relative_to(ROOT)), "overrides": overrides,
            "models": {arm: {"version": parts[arm][-1], "params": cards[arm]["params"]}
                       for arm in parts},
            "window_buckets": round(spec.monitor.window_s / control.bucket_seconds),
            "bucket_seconds": control.bucket_seconds,
            "reference_buckets": control.reference_buckets,
            "monitor": spec.monitor.model_dump(mode="json"), "rules": rules,
            "traffic": {"requests_per_minute": REQUESTS_PER_MINUTE, "max_rows": MAX_ROWS,
                        "shadow_fraction": SHADOW_FRACTION,
                        "latency_ms_lognormal": {"median": LATENCY_MS[0], "sigma": LATENCY_MS[1]}},
            "seeds": SEEDS, "shifted_per_severity": SHIFTED_PER_SEVERITY,
            "shift_defaults": {kind: float(get_dataset_args(as_dict=True)[parameter])
                               for kind, parameter in GENERATOR_SHIFTS.items()},
        },
        "windows": records, "summary": summary,
        "sensitivity": sensitivity(spec.monitor, records, kept),
        "ratios": {"false_alarm_rate": summary["false_alarm"]["rate"],
                   "detection_rate": summary["detection"]["rate"]},
    }
    output = results_path("monitor", args.output, args.smoke)
    write_result(result, output)
    markdown = format_markdown(result)
    if not args.smoke:
        update_section("monitor", "## Monitoring (`bench/monitor.py`)\n\n" + markdown)
    print(markdown)
    print(f"wrote {output} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
