"""Soak curve: the routed endpoint's p99 against the open-loop load, one Serve deployment for
every level. Writes bench/results/soak-curve.json and the "soak-curve" section of BENCHMARKS.md
(soak-curve-proxy with `--proxy-dataplane`: Serve's Python proxy).

    .venv/bin/python bench/soak_curve.py [--store ./runs] [--loads 0.2,0.3,0.4,0.5,0.6,0.7]
        [--seconds 100] [--proxy-dataplane] [--output PATH] [--smoke]

bench/soak.py holds one load (70% of the closed-loop maximum) for 10 minutes while the canary
walks; it answers "does it hold there". This answers "up to which load does p99 stay within 2x
of the unloaded p99", the soak's latency target: same app, sizing, request bodies, client and
maximum as bench/soak.py, then an open loop at each fraction of that maximum in turn, from the
lowest, for `--seconds` each. The canary stays at its first step (5% student, 10% mirrored) so
that every level serves the same mix. The unloaded reference is 1,000 requests (the soak's 300
give a p99 from its 3 slowest). Per level: requests/s, p50/p99, p99 / unloaded p99, failed
requests, the most a send fell behind schedule and how busy the machine's CPUs were (psutil,
all processes, the client included). `--smoke`: two levels of 2 s, BENCHMARKS.md untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import (  # noqa: E402
    refuse_unnamed_experiment,
    results_path,
    serving_title,
    update_section,
)
from load import request_bodies  # noqa: E402
from measure import save  # noqa: E402
from soak import IN_FLIGHT, MAX_CLIENTS, TARGETS, hold, probed_app, sizing  # noqa: E402

from distillery.config import load_spec  # noqa: E402
from distillery.data.sources import open_source  # noqa: E402
from distillery.storage import Store  # noqa: E402
from serve import ROUTED, SPEC, models_or_exit, use_dataplane  # noqa: E402

LOADS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SECONDS = 100.0
UNLOADED_REQUESTS = 1000
PINNED_S = 1e9  # the canary's steps never end within the run


def loads_arg(text: str) -> tuple[float, ...]:
    """`0.2,0.5` -> (0.2, 0.5): fractions in (0, 1], ascending, no repeats."""
    try:
        loads = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: comma-separated fractions, e.g. 0.2,0.5") from None
    if not all(0 < f <= 1 for f in loads) or list(loads) != sorted(set(loads)):
        raise argparse.ArgumentTypeError(f"{text!r}: fractions in (0, 1], ascending, no repeats")
    return loads


def highest_met(levels: list[dict], target: float = TARGETS["p99_vs_unloaded"]) -> float | None:
    """The highest load up to which every level, from the lowest, kept p99 within `target` x
    the unloaded p99 and failed no request; None if the lowest did not."""
    met = None
    for level in levels:
        if level["errors"] or level["p99_vs_unloaded"] > target:
            break
        met = level["load"]
    return met


def format_markdown(result: dict) -> str:
    inputs, s = result["inputs"], result["summary"]
    rows = ["| load | req/s | p50 ms | p99 ms | p99 / unloaded p99 | failed | max send lag s | "
            "CPU busy |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for level in result["runs"]:
        p50, p99, ratio = (level[k] for k in ("p50_ms", "p99_ms", "p99_vs_unloaded"))
        rows.append(f"| {level['load']:.0%} | {level['rps']:.0f} | "
                    + (f"{p50:.1f} | {p99:.1f} | {ratio:.2f} | " if p99 else "- | - | - | ")
                    + f"{level['errors']} | {level['max_lag_s']:.3f} | "
                    f"{level['cpu_busy']:.0%} |")
    met = result["ratios"]["highest_load_within_target"]
    return "\n".join([
        f"{result['machine']['cpus']} CPUs ({result['machine']['platform']}), Ray "
        f"{result['versions']['ray']}; data plane: {inputs['dataplane']}. Routed endpoint "
        f"`{ROUTED}` ({inputs['sizing']}), one test row per request, aiohttp on the same "
        f"machine; canary pinned at {inputs['student_weight']:g}% student.",
        "",
        f"Unloaded (c=1, {inputs['requests']['unloaded']} requests): p50 "
        f"{s['unloaded']['p50_ms']:.1f} ms, p99 {s['unloaded']['p99_ms']:.1f} ms. Maximum "
        f"(c={MAX_CLIENTS}, closed loop): {s['max']['rps']:.0f} req/s. Each load is an open "
        f"loop at that fraction of the maximum for {inputs['seconds']:g} s, lowest first.",
        "",
        *rows,
        "",
        f"p99 within {TARGETS['p99_vs_unloaded']:g}x of the unloaded p99 up to "
        + (f"{met:.0%} of the maximum." if met is not None else "none of these loads."),
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./runs")
    parser.add_argument("--loads", type=loads_arg, default=LOADS,
                        help="fractions of the closed-loop maximum, ascending")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per load")
    parser.add_argument("--output", default=None, help="default: bench/results/soak-curve"
                        "[-proxy].json; required with --loads or --seconds other "
                        "than the defaults, and then BENCHMARKS.md is left alone")
    parser.add_argument("--proxy-dataplane", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    refuse_unnamed_experiment(parser, args, {"--loads": "loads", "--seconds": "seconds"})
    dataplane = use_dataplane(args.proxy_dataplane, parser)
    name = "soak-curve-proxy" if args.proxy_dataplane else "soak-curve"
    loads, seconds, probe = args.loads, args.seconds, (UNLOADED_REQUESTS, 5000)
    if args.smoke:
        loads, seconds, probe = (0.2, 0.4), 2.0, (30, 100)

    spec = load_spec(SPEC, [f"store={args.store}"])
    parts, cards = models_or_exit(spec, "bench/soak_curve.py", args.store)
    source = open_source(spec.data, Store(spec.store), transfer=False)
    bodies = request_bodies(source.sample().x_test)

    levels = []
    with probed_app(spec, parts, PINNED_S, [], bodies, probe) as (base, served, unloaded, peak):
        url = base + ROUTED
        for load in loads:
            rate = load * peak["rows_per_s"]
            print(f"load {load:.0%}: {rate:.0f} req/s for {seconds:g} s", flush=True)
            psutil.cpu_percent()  # starts the busy-time interval read after the hold
            [bucket], _ = asyncio.run(hold(url, f"{base}/healthz", bodies, rate, seconds,
                                           seconds, {}))
            # a level where nothing was answered is recorded (p50/p99 None), not a crash
            ratio = bucket["p99_ms"] / unloaded["p99_ms"] if bucket["answered"] else None
            levels.append({"load": load, "rate": rate, "rps": bucket["rps"],
                           "answered": bucket["answered"], "errors": bucket["errors"],
                           "first_error": bucket["first_error"],
                           "p50_ms": bucket["p50_ms"], "p99_ms": bucket["p99_ms"],
                           "p99_vs_unloaded": ratio,
                           "max_lag_s": bucket["max_lag_s"],
                           "cpu_busy": psutil.cpu_percent() / 100})
    summary = {"unloaded": {k: unloaded[k] for k in ("p50_ms", "p99_ms", "errors")},
               "max": {"rps": peak["rows_per_s"], "p99_ms": peak["p99_ms"],
                       "errors": peak["errors"]}}
    inputs = {"store": args.store, "smoke": args.smoke, "loads": list(loads),
              "seconds": seconds, "sizing": sizing(served), "dataplane": dataplane,
              "student_weight": served.serve.rollout.steps[0],
              "requests": {"unloaded": probe[0], "max": probe[1]},
              "in_flight_limit": IN_FLIGHT, "client": f"aiohttp {aiohttp.__version__}",
              "models": {arm: {"version": parts[arm][-1], "params": cards[arm]["params"]}
                         for arm in parts}}
    output = results_path(name, args.output, args.smoke)
    result = save(name, inputs, levels, summary,
                  {"highest_load_within_target": highest_met(levels)}, output,
                  targets={"p99_vs_unloaded": TARGETS["p99_vs_unloaded"]})
    markdown = format_markdown(result)
    if not args.smoke and args.output is None:
        update_section(name, serving_title("Soak curve", "soak_curve", args.proxy_dataplane)
                       + markdown)
    print(markdown)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
