"""Serving bench: the Ray Serve app of the default spec (topology `colocated`: the router holds
teacher and student) against the old path (topology `separate`: each model a deployment of its
own, called over Ray) and against the same student in a bare FastAPI server, and the routed
endpoint with the request log on and off; one load generator for every target (bench/load.py),
which also records the CPU each answered request costs (all processes). Writes
bench/results/serve.json and the "serve" section of BENCHMARKS.md.

    .venv/bin/python bench/serve.py [--store ./runs] [--requests 300] [--concurrency 1,8,32]
        [--repetitions 3] [--output bench/results/serve.json] [--proxy-dataplane] [--smoke]
        [--config jobs/configs/text.yaml]

Models: the teacher and the newest student of the quickstart pipeline in `--store` (what `make
demo` writes). Nothing is written there: the app serves copies of the two models from a scratch
store, so rollout state and request-log rows of synthetic traffic never reach the user's store.
`--config jobs/configs/text.yaml`: the text pipeline's models (`make demo-text`), requests of
one text each (the test split's token ids decoded by the tokenizer, so the replicas tokenize
them again), results in serve-text.json and their own section.

Data plane: what `distillery serve` uses on an embedded Ray (`runtime.SERVE_DATAPLANE`: HAProxy
into replicas that serve HTTP themselves). Serve reads it when Ray starts, so each data plane
is a run of its own: `--proxy-dataplane` measures Serve's Python proxy instead and writes
serve-proxy.json (serve-text-proxy.json) and its own section.

Load: closed-loop clients (bench/load.py), one row of the test split per request, the same
bodies for every target. Each point (target, c, repetition) opens its connections with a
warm-up, then times max(`--requests`, 16 c) requests: 300 at c = 1 and 8, 512 at c = 32.
- 300 keep the p50's 95% confidence interval (order statistics, `load.median_ci`) between the
  44th and 56th percentile of the point's own latencies; the results hold each point's interval
  and the section its widest, to set beside the spread between repetitions, which is larger.
  A p99 of 300 requests rests on their 3 slowest: read its spread between repetitions.
- 16 per client keep the closing round, when fewer than c requests are left in flight, to about
  c / (2 x requests) <= 1/32 of the timed phase, about the same share for every target at one c.
More requests per point would narrow the intervals little and lengthen the bench most at
c = 1, where each request waits for the one before it.

The request log's cost is measured apart, as a crossover: two copies of the app run at once
(`/a` and `/b`), one with the log on; the client sends each routed request to one of them at
random, so both see the same moments of a noisy machine; then the two swap settings. The
overhead is the geometric mean of the two arrangements' p50(log on) / p50(log off), which
cancels whatever makes one app faster than the other (reported as the A/A difference). See
`log_overhead`. What it measures is the log's cost to the requests of its own app; CPU the log
takes from the shared cores slows the other app too, and that part cancels: the flush runs in
a thread every `flush_rows` rows or `flush_seconds`, so it is small next to the requests' own
work, but it is not in the number. The log table's c is the clients of both apps together
(about c/2 on each); each app gets the requests of a main point at that c. By default only the
largest c (`--log-concurrency`), which the acceptance ratio reads: every other c is one more
crossover, and `make bench` has no room for it under its 20-minute limit.

`--smoke`: seconds, for the test (20 requests, c 1 and 4, one repetition, BENCHMARKS.md
untouched).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import ROOT, machine, results_path, serving_title, update_section  # noqa: E402
from load import (  # noqa: E402
    ROWS_PER_REQUEST,
    drive,
    fastapi_server,
    request_bodies,
    serve_apps,
)

from distillery.config import PipelineSpec, load_spec  # noqa: E402
from distillery.data.sources import open_source  # noqa: E402
from distillery.data.text import TOKENIZER_FILE  # noqa: E402
from distillery.models.artifacts import library_versions  # noqa: E402
from distillery.storage import Store  # noqa: E402
from distillery.store_layout import CARD, record_teacher, served_models  # noqa: E402

SPEC = ROOT / "jobs/configs/mnist1d.yaml"
REQUESTS_PER_CLIENT = 16  # timed requests per point: at least this many per client (docstring)
# The old path beside the default one, sized so both apps fit this 2-CPU machine: a router,
# a teacher and two student replicas of a quarter CPU each. Fixed replica counts: autoscaling
# mid-run would change what is measured.
SEPARATE = ["serve.topology=separate", "serve.teacher_deployment.replicas=1",
            "serve.teacher_deployment.cpus_per_replica=0.25",
            "serve.student_deployment.replicas=2",
            "serve.student_deployment.cpus_per_replica=0.25"]
# The routed endpoint stays at the canary's first step (5% student, 10% mirrored) for the whole
# run: a promotion mid-run would change its mix. The scheduled drift check (Evidently, every
# 300 s) is a periodic job, not a per-request cost, and would land in random timed windows.
PINNED = ["serve.rollout.min_seconds=1000000000", "monitor.check_interval_s=null"]
TEXT_THROUGHPUT_TARGET = 3.0  # student/teacher throughput of the text models at the largest c
TARGETS = {  # name -> (server, path); the routed path names the spec's endpoint
    "serve-student": ("serve", "/v1/models/student:predict"),
    "serve-teacher": ("serve", "/v1/models/teacher:predict"),
    "serve-routed": ("serve", "/v1/models/{endpoint}:predict"),
    "separate-routed": ("serve", "/separate/v1/models/{endpoint}:predict"),
    "fastapi-student": ("fastapi", "/v1/models/student:predict"),
}
LABELS = {"serve-student": "Ray Serve, student", "serve-teacher": "Ray Serve, teacher",
          "serve-routed": "Ray Serve, routed",
          "separate-routed": "Ray Serve, routed, topology separate (the old path)",
          "fastapi-student": "FastAPI + uvicorn, student"}
ROUTED = "/v1/models/mnist1d:predict"  # the reference pipeline's (bench/soak*.py)
TARGETS_ACCEPTANCE = {  # the serving issue's targets: ratio -> (at least, at most)
    "rayserve_vs_fastapi_throughput_c32": (0.5, None),
    "routed_vs_direct_throughput_c32": (0.9, None),
    "unloaded_p50_added_ms": (None, 3.0),
}


def use_dataplane(proxy: bool, parser: argparse.ArgumentParser) -> str:
    """The data plane of this run, in words. The default (`proxy` false) is the one `distillery
    serve` gets (runtime.SERVE_DATAPLANE), set in this process's environment before Ray starts
    so that its processes inherit it. Serve reads it when Ray starts, so a run that would join a
    running Ray (RAY_ADDRESS, or one this process started) cannot set it and is refused rather
    than mislabelled. Other RAY_SERVE_* settings in the environment (an experiment's) are
    named too: the results file is all a reader has."""
    import ray

    from distillery.runtime import serve_dataplane

    plane = {} if proxy else serve_dataplane()
    if plane and (os.environ.get("RAY_ADDRESS") or ray.is_initialized()):
        parser.error("the default data plane needs a Ray of its own (Serve reads it when Ray "
                     "starts); unset RAY_ADDRESS, or measure --proxy-dataplane")
    for name, value in plane.items():
        os.environ.setdefault(name, value)
    others = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                       if k.startswith("RAY_SERVE_") and k not in plane)
    also = f"; from the environment: {others}" if others else ""
    if not plane:
        return "Serve proxy" + also
    return "HAProxy, direct ingress (" + ", ".join(
        f"{k}={os.environ[k]}" for k in plane) + ")" + also


# ---------------------------------------------------------------- measure

def timed_requests(c: int, minimum: int) -> int:
    """Timed requests of a point at concurrency c: max(minimum, REQUESTS_PER_CLIENT x c)."""
    return max(minimum, REQUESTS_PER_CLIENT * c)


def log_line(label: str, run: dict) -> None:
    print(f"{label:<40} {run['rows_per_s']:8.0f} rows/s  p50 {run['p50_ms'] or 0:7.2f} ms  "
          f"p99 {run['p99_ms'] or 0:7.2f} ms  errors {run['errors']}", flush=True)


def measure(urls: dict[str, str], bodies: list[bytes], concurrency: list[int], requests: int,
            repetitions: int) -> list[dict]:
    """Every target at every c, `repetitions` times, timed_requests(c, requests) each; odd
    repetitions reverse the order of targets, so that none always runs first."""
    runs = []
    for repetition in range(repetitions):
        for c in concurrency:
            for target in list(TARGETS)[::-1 if repetition % 2 else 1]:
                [run] = asyncio.run(drive([urls[target]], bodies, c,
                                          timed_requests(c, requests), warmup=max(20, 4 * c)))
                runs.append({"target": target, "concurrency": c, "repetition": repetition,
                             **run})
                log_line(f"rep {repetition} c={c:<3} {target}", run)
    return runs


def measure_log(base: str, routed: str, deploy: Callable[[bool], None], bodies: list[bytes],
                concurrency: list[int], requests: int, repetitions: int) -> list[dict]:
    """The routed endpoint of two apps at once, `/a` and `/b`, requests interleaved at random;
    `deploy(a_logs)` (re)deploys both, the request log on in `/a` when `a_logs`, else in `/b`.
    Each repetition runs both arrangements, in alternating order, so that a repetition starts
    with the arrangement the last one ended with (one redeploy per repetition after the
    first). Each app gets timed_requests(c, requests) per point."""
    runs, a_logs, deployed = [], True, None
    for repetition in range(repetitions):
        for arrangement in (a_logs, not a_logs):
            if arrangement != deployed:  # every deploy restarts every replica
                deploy(arrangement)
                deployed = arrangement
            for c in concurrency:
                a, b = asyncio.run(drive([f"{base}/a{routed}", f"{base}/b{routed}"], bodies, c,
                                         timed_requests(c, requests), warmup=max(20, 4 * c),
                                         seed=repetition * 1000 + c))
                on, off = (a, b) if arrangement else (b, a)
                for log, run in (("on", on), ("off", off)):
                    runs.append({"log": log, "logging_app": "a" if arrangement else "b",
                                 "concurrency": c, "repetition": repetition, **run})
                    log_line(f"rep {repetition} c={c:<3} log {log} (app "
                             f"{'a' if (log == 'on') == arrangement else 'b'})", run)
        a_logs = not a_logs
    return runs


# ---------------------------------------------------------------- summary

def summarize(runs: list[dict]) -> dict:
    """{target: {str(c): {metric: {median, min, max}, "errors": total}}} over repetitions."""
    summary: dict = {}
    for run in runs:
        summary.setdefault(run["target"], {}).setdefault(str(run["concurrency"]), []).append(run)
    for by_c in summary.values():
        for c, group in by_c.items():
            stats = {"errors": sum(r["errors"] for r in group)}
            for metric in ("rows_per_s", "p50_ms", "p99_ms", "cpu_ms_per_request",
                           "client_cpu_ms_per_request"):
                values = [r[metric] for r in group if r[metric] is not None]
                stats[metric] = ({"median": statistics.median(values), "min": min(values),
                                  "max": max(values)} if values else None)
            by_c[c] = stats
    return summary


def log_overhead(log_runs: list[dict]) -> dict[str, dict]:
    """Per c: `overhead` = sqrt(r_a * r_b) - 1 and `a_vs_b` = sqrt(r_a / r_b) - 1, where r_x is
    the median over repetitions of p50(log on) / p50(log off) measured together while app x
    logs. If the log adds a factor L and app a is a factor A slower than b, r_a = L * A and
    r_b = L / A: the product isolates L, the quotient A (the A/A difference). `ratios` are the
    per-repetition ratios, for their spread."""
    paired: dict = {}
    for run in log_runs:
        key = (str(run["concurrency"]), run["logging_app"], run["repetition"])
        paired.setdefault(key, {})[run["log"]] = run["p50_ms"]
    by_c: dict = {}
    for (c, app, _), p50 in paired.items():
        by_c.setdefault(c, {}).setdefault(app, []).append(p50["on"] / p50["off"])
    result = {}
    for c, per_app in by_c.items():
        r_a, r_b = (statistics.median(per_app[app]) for app in ("a", "b"))
        result[c] = {"overhead": (r_a * r_b) ** 0.5 - 1, "a_vs_b": (r_a / r_b) ** 0.5 - 1,
                     "ratios": {app: values for app, values in per_app.items()}}
    return result


def ratios(summary: dict, overhead: dict[str, dict], c: int) -> dict:
    """The headline ratios at concurrency `c` (medians over repetitions): student/teacher,
    routed/FastAPI (the serving cost), routed/student (the routing's cost), default/old topology
    throughput; the routed p50 over FastAPI's at the lowest c (unloaded); the request log's p50
    overhead."""
    def median(target: str, metric: str, at: int = c) -> float:
        return summary[target][str(at)][metric]["median"]

    low = min(int(k) for k in summary["serve-routed"])
    return {
        f"student_vs_teacher_throughput_c{c}": (median("serve-student", "rows_per_s")
                                                / median("serve-teacher", "rows_per_s")),
        f"rayserve_vs_fastapi_throughput_c{c}": (median("serve-routed", "rows_per_s")
                                                 / median("fastapi-student", "rows_per_s")),
        f"routed_vs_direct_throughput_c{c}": (median("serve-routed", "rows_per_s")
                                              / median("serve-student", "rows_per_s")),
        f"colocated_vs_separate_routed_throughput_c{c}": (
            median("serve-routed", "rows_per_s") / median("separate-routed", "rows_per_s")),
        "unloaded_p50_added_ms": (median("serve-routed", "p50_ms", low)
                                  - median("fastapi-student", "p50_ms", low)),
        "request_log_p50_overhead": overhead[str(c)]["overhead"],
    }


def verdicts(ratio_values: dict) -> list[str]:
    """Each acceptance target this run measured: `name value (target: met|**missed**)`."""
    lines = []
    for name, (least, most) in TARGETS_ACCEPTANCE.items():
        if name not in ratio_values:
            continue
        value = ratio_values[name]
        met = (least is None or value >= least) and (most is None or value <= most)
        bound = f">= {least:g}" if least is not None else f"<= {most:g}"
        lines.append(f"`{name}` {value:.2f} (target {bound}: "
                     f"{'met' if met else '**missed**'})")
    return lines


def p50_precision(runs: list[dict], summary: dict) -> dict:
    """`ci`: the widest p50 confidence interval of a run, as +/- a share of its p50,
    (hi - lo) / 2 / p50, with its (target, c); `spread`: the median over points (target, c) of
    the p50's spread between repetitions, (max - min) / median."""
    ci = max((((r["p50_ci_ms"][1] - r["p50_ci_ms"][0]) / 2 / r["p50_ms"], r["target"],
               r["concurrency"]) for r in runs if r["p50_ci_ms"]), key=lambda t: t[0])
    spread = statistics.median((s["p50_ms"]["max"] - s["p50_ms"]["min"]) / s["p50_ms"]["median"]
                               for by_c in summary.values() for s in by_c.values()
                               if s["p50_ms"])
    return {"ci": ci, "spread": spread}


def format_markdown(result: dict) -> str:
    inputs, summary = result["inputs"], result["summary"]
    lines = ["| target | c | rows/s | p50 ms | p99 ms | CPU ms/request (client's) | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def cell(stats: dict | None, digits: int) -> str:
        if stats is None:
            return "-"
        return (f"{stats['median']:,.{digits}f} ({stats['min']:,.{digits}f}-"
                f"{stats['max']:,.{digits}f})")

    def cpu(stats: dict) -> str:
        if not stats.get("cpu_ms_per_request"):
            return "-"
        return (f"{stats['cpu_ms_per_request']['median']:.2f} "
                f"({stats['client_cpu_ms_per_request']['median']:.2f})")

    for target in TARGETS:
        for c, stats in summary[target].items():
            lines.append(f"| {LABELS[target]} | {c} | {cell(stats['rows_per_s'], 0)} | "
                         f"{cell(stats['p50_ms'], 2)} | {cell(stats['p99_ms'], 2)} | "
                         f"{cpu(stats)} | {stats['errors']} |")
    c = max(inputs["concurrency"])
    r = result["ratios"]
    models = inputs["models"]
    precision = p50_precision(result["runs"], summary)
    ci, spread = precision["ci"], precision["spread"]

    def counts(requests: dict) -> str:
        return ", ".join(f"{n} at c={c}" for c, n in requests.items())

    log_lines = ["| c | p50 overhead of the request log | per-repetition p50 ratios, app a "
                 "logging / app b logging | A/A: app a vs app b |", "|---:|---:|---|---:|"]
    for lc, o in result["request_log_p50_overhead"].items():
        per_rep = " / ".join(", ".join(f"{v:.3f}" for v in o["ratios"][app])
                             for app in ("a", "b"))
        log_lines.append(f"| {lc} | {o['overhead']:+.1%} | {per_rep} | {o['a_vs_b']:+.1%} |")
    return "\n".join([
        f"{result['machine']['cpus']} CPUs ({result['machine']['platform']}), Ray "
        f"{result['versions']['ray']}, torch {result['versions']['torch']}; data plane: "
        f"{inputs['dataplane']}. Teacher {models['teacher']['version']} "
        f"({models['teacher']['params']:,} params), student {models['student']['version']} "
        f"({models['student']['params']:,} params).",
        "",
        f"Serve: the default spec's app, one router replica of {inputs['router_cpus']:g} CPU "
        f"holding teacher and student (topology colocated); beside it the old path, topology "
        f"separate: a router, 1 teacher and 2 student replicas of 0.25 CPU each "
        f"(`/separate`). `@serve.batch` up to {inputs['max_batch_size']} requests, waiting "
        f"{inputs['batch_wait_ms']:g} ms; the routed endpoints hold the canary's first step "
        f"({inputs['routed_student_weight']:g}% student, {inputs['shadow_fraction']:.0%} "
        f"mirrored). FastAPI: one uvicorn worker, one torch thread, a forward pass per request. "
        f"Load: {inputs['client']}, {ROWS_PER_REQUEST} test row per request; timed requests "
        f"per point after a warm-up: {counts(inputs['requests'])}; {inputs['repetitions']} "
        f"repetitions: median (min-max). Client and servers share the machine's cores; CPU "
        f"ms/request is the machine's busy CPU time (all processes) per answered request, the "
        f"client's own share in brackets. Within "
        f"a run, the p50's 95% confidence interval (order statistics) is at most "
        f"+/-{ci[0]:.1%} of it ({LABELS[ci[1]]}, c={ci[2]}); between repetitions a point's "
        f"p50 spreads over {spread:.0%} of its median (max - min; median over points).",
        "",
        *lines,
        "",
        f"At c={c}: student/teacher throughput {r[f'student_vs_teacher_throughput_c{c}']:.2f}x"
        f"{text_target(r[f'student_vs_teacher_throughput_c{c}']) if inputs.get('text') else ''}; "
        f"routed/FastAPI {r[f'rayserve_vs_fastapi_throughput_c{c}']:.2f}x; routed/student "
        f"{r[f'routed_vs_direct_throughput_c{c}']:.2f}x; colocated/separate (routed) "
        f"{r[f'colocated_vs_separate_routed_throughput_c{c}']:.2f}x. Unloaded (c="
        f"{min(inputs['concurrency'])}): the routed p50 is "
        f"{r['unloaded_p50_added_ms']:.2f} ms above FastAPI's.",
        "",
        *([] if inputs.get("text") else [  # the targets are the default spec's
            "Targets of the serving issue (at the largest c; unloaded: the lowest): "
            + "; ".join(verdicts(r)) + ".", ""]),
        f"Request log (crossover, see the script's docstring): two copies of the default app, "
        f"the routed endpoint of both driven at once with "
        f"requests interleaved at random, {counts(inputs['log_requests'])} timed requests per "
        f"app and point, {inputs['repetitions']} repetitions of both arrangements; c counts "
        f"the clients of both apps. It is the log's cost to its own app's requests: CPU the "
        f"log takes from the shared cores slows both apps alike and cancels out. "
        f"`request_log_p50_overhead` (c={c}): {r['request_log_p50_overhead']:+.1%} "
        f"(target < +5%: {'met' if r['request_log_p50_overhead'] < 0.05 else '**missed**'}).",
        "",
        *log_lines,
    ])


def text_target(ratio: float) -> str:
    """Issue 22's target for the text models: the student at >= 3x the teacher's throughput."""
    verdict = "met" if ratio >= TEXT_THROUGHPUT_TARGET else "**missed**"
    return f" (target >= {TEXT_THROUGHPUT_TARGET:g}x: {verdict})"


def write_result(result: dict, output: Path) -> None:
    """Atomically: a reader never sees half a file. (distillery.compare has the same four lines,
    but importing it pulls in Ray Train and SciPy, which would slow the smoke test.)"""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(output)


# ---------------------------------------------------------------- servers

def bench_spec(config: Path, store: str, student: str | None = None, log: bool = True,
               sizing: list[str] = ()) -> PipelineSpec:
    extra = [] if student is None else [f"serve.student={student}"]
    return load_spec(config, [f"store={store}", *sizing, *PINNED, *extra,
                              f"monitor.request_log.enabled={str(log).lower()}"])


def request_rows(spec: PipelineSpec) -> np.ndarray:
    """The test split's rows (N, D); of a text pipeline, its texts (N,), decoded from their ids
    by the tokenizer (lower-cased and without what truncation cut, as the models read them)."""
    rows = open_source(spec.data, Store(spec.store), transfer=False).sample().x_test
    if not spec.reads_text:
        return rows
    from distillery.models.hf_loaders import load_tokenizer

    tokenizer = load_tokenizer(spec.data.tokenizer, "data.tokenizer")
    return np.array(tokenizer.batch_decode(rows.tolist(), skip_special_tokens=True),
                    dtype=object)


def scratch_store(spec: PipelineSpec, root: Path, parts: dict[str, tuple[str, ...]]) -> str:
    """A store at `root` holding only the served teacher and student (the files `load_model`
    reads), with the teacher's `latest.json`; its root."""
    src, dst = Store(spec.store), Store(str(root))
    for where in parts.values():
        for name in (CARD, "model.pt", "model.ts", TOKENIZER_FILE):
            if src.exists(*where, name):
                dst.write_bytes(src.read_bytes(*where, name), *where, name)
    record_teacher(dst, spec.teacher.name, parts["teacher"][-1])
    return dst.root


# ---------------------------------------------------------------- main

def models_or_exit(spec, script: str, store: str) -> tuple[dict, dict]:
    """The quickstart's served teacher and student, or exit 2 saying how to make them."""
    try:
        return served_models(spec)
    except FileNotFoundError as err:
        print(f"{script}: {err}\nThe bench uses the quickstart's teacher and student from "
              f"--store {store}; `make demo` trains them there.", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./runs")
    parser.add_argument("--requests", type=int, default=300,
                        help="timed requests per point, and at least 16 per client")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--log-concurrency", default="32",
                        help="c of the request-log comparison; must hold the largest c")
    parser.add_argument("--output", default=None, help="default: bench/results/serve.json, "
                                                       "serve-proxy.json with "
                                                       "--proxy-dataplane (under smoke/ "
                                                       "with --smoke)")
    parser.add_argument("--proxy-dataplane", action="store_true",
                        help="Serve's Python proxy instead of `distillery serve`'s data plane")
    parser.add_argument("--config", default=str(SPEC.relative_to(ROOT)),
                        help="the pipeline whose models are served (jobs/configs/text.yaml: "
                             "the text models, results in serve-text.json)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.concurrency, args.log_concurrency = 20, "1,4", "4"
        args.repetitions = 1
    concurrency = [int(c) for c in args.concurrency.split(",")]
    log_concurrency = [int(c) for c in args.log_concurrency.split(",")]
    if max(concurrency) not in log_concurrency:
        parser.error(f"--log-concurrency {args.log_concurrency} must include the largest "
                     f"--concurrency, {max(concurrency)}")
    config = ROOT / args.config
    spec = bench_spec(config, args.store)
    name = "serve-text" if spec.reads_text else "serve"
    name += "-proxy" if args.proxy_dataplane else ""
    output = results_path(name, args.output, args.smoke)
    dataplane = use_dataplane(args.proxy_dataplane, parser)

    parts, cards = models_or_exit(spec, "bench/serve.py", args.store)
    bodies = request_bodies(request_rows(spec))
    paths = {t: path.format(endpoint=spec.name) for t, (_, path) in TARGETS.items()}

    from distillery.runtime import ensure_ray

    with tempfile.TemporaryDirectory() as scratch:
        store = scratch_store(spec, Path(scratch), parts)
        student = parts["student"][-1]
        main_spec = bench_spec(config, store, student)
        separate = bench_spec(config, store, student, sizing=SEPARATE)
        log_specs = {log: bench_spec(config, store, student, log) for log in (True, False)}
        with fastapi_server(store, parts["student"]) as (bare, bare_ready):
            ensure_ray()
            with serve_apps() as (base, deploy):
                deploy({"/": main_spec, "/separate": separate})
                bare_ready()
                urls = {target: (base if server == "serve" else bare) + paths[target]
                        for target, (server, _) in TARGETS.items()}
                runs = measure(urls, bodies, concurrency, args.requests, args.repetitions)
                log_runs = measure_log(
                    base, paths["serve-routed"], lambda a_logs: deploy({"/a": log_specs[a_logs],
                                                 "/b": log_specs[not a_logs]}),
                    bodies, log_concurrency, args.requests, args.repetitions)

    summary = summarize(runs)
    serving = main_spec.serve
    overhead = log_overhead(log_runs)
    result = {
        "bench": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "versions": library_versions(),
        "inputs": {
            "store": args.store, "spec": args.config,
            "overrides": PINNED, "separate_overrides": [*SEPARATE, *PINNED],
            "log_overrides": PINNED, "router_cpus": serving.router_cpus,
            "models": {arm: {"version": parts[arm][-1], "params": cards[arm]["params"]}
                       for arm in parts},
            "dataplane": dataplane,
            "client": f"aiohttp {aiohttp.__version__}",
            "data": f"{len(bodies)} request bodies from the test split of {spec.data.source}",
            "text": spec.reads_text,
            "rows_per_request": ROWS_PER_REQUEST,
            "requests": {str(c): timed_requests(c, args.requests) for c in concurrency},
            "log_requests": {str(c): timed_requests(c, args.requests) for c in log_concurrency},
            "concurrency": concurrency, "log_concurrency": log_concurrency,
            "repetitions": args.repetitions,
            "max_batch_size": serving.student_deployment.max_batch_size,
            "batch_wait_ms": serving.student_deployment.batch_wait_timeout_s * 1000,
            "routed_student_weight": serving.rollout.steps[0],
            "shadow_fraction": serving.rollout.shadow_fraction,
            "targets": paths,
        },
        "runs": runs, "log_runs": log_runs, "summary": summary,
        "ratios": ratios(summary, overhead, max(concurrency)),
        "request_log_p50_overhead": overhead,
    }
    write_result(result, output)
    markdown = format_markdown(result)
    if not args.smoke:
        title = "Serving text (`--config jobs/configs/text.yaml`)" if spec.reads_text else "Serving"
        update_section(name, serving_title(title, "serve", args.proxy_dataplane) + markdown)
    print(markdown)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
