"""bench/serve.py: its summary, the request log's crossover estimate and the ratios on
hand-made runs, the missing-models exit, and a --smoke run end to end on the session's local
Ray (real Ray Serve, a real uvicorn server, real HTTP)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, load_bench, smoke_bench


def run(target: str, c: int, rows_per_s: float, p50_ms: float, repetition: int = 0) -> dict:
    return {"target": target, "concurrency": c, "repetition": repetition, "errors": 0,
            "rows_per_s": rows_per_s, "p50_ms": p50_ms, "p99_ms": 2 * p50_ms,
            "cpu_ms_per_request": 1000 / rows_per_s, "client_cpu_ms_per_request": 0.25}


def log_run(log: str, app: str, c: int, p50_ms: float, repetition: int) -> dict:
    return {"log": log, "logging_app": app, "concurrency": c, "repetition": repetition,
            "p50_ms": p50_ms}


def test_summary_is_median_min_max_over_repetitions_and_ratios_use_medians():
    bench = load_bench("serve")
    runs = [run("serve-student", 4, v, 10.0, i) for i, v in enumerate([300.0, 100.0, 200.0])]
    runs += [run("serve-teacher", 4, 50.0, 20.0), run("fastapi-student", 4, 400.0, 5.0),
             run("serve-routed", 4, 180.0, 12.0), run("separate-routed", 4, 60.0, 30.0),
             run("serve-routed", 1, 90.0, 3.5), run("fastapi-student", 1, 300.0, 1.0)]
    summary = bench.summarize(runs)
    assert summary["serve-student"]["4"]["rows_per_s"] == {"median": 200.0, "min": 100.0,
                                                           "max": 300.0}
    assert summary["serve-student"]["4"]["p99_ms"]["median"] == 20.0
    ratios = bench.ratios(summary, {"4": {"overhead": 0.02}}, 4)
    assert ratios == {"student_vs_teacher_throughput_c4": 4.0,
                      "rayserve_vs_fastapi_throughput_c4": 0.45,  # routed, as the issue says
                      "routed_vs_direct_throughput_c4": 0.9,
                      "colocated_vs_separate_routed_throughput_c4": 3.0,
                      "unloaded_p50_added_ms": 2.5,  # at the lowest c
                      "request_log_p50_overhead": 0.02}
    assert bench.verdicts({"routed_vs_direct_throughput_c32": 0.85,
                           "unloaded_p50_added_ms": 2.5}) == [
        "`routed_vs_direct_throughput_c32` 0.85 (target >= 0.9: **missed**)",
        "`unloaded_p50_added_ms` 2.50 (target <= 3: met)"]


def test_median_ci_is_the_order_statistics_around_the_median():
    load = load_bench("load")
    # n = 300: ranks floor(150 - 1.96 sqrt(300) / 2) = 133 and ceil(151 + 16.97) = 168
    assert load.median_ci(np.arange(300.0, 0.0, -1.0)) == (133.0, 168.0)
    assert load.median_ci(np.array([5.0])) == (5.0, 5.0)  # clipped to the one value


def test_timed_requests_keep_a_minimum_and_16_per_client():
    bench = load_bench("serve")
    assert [bench.timed_requests(c, 300) for c in (1, 8, 32)] == [300, 300, 512]


def test_p50_precision_is_the_widest_interval_and_the_median_spread():
    bench = load_bench("serve")
    runs = [run("serve-student", 1, 50.0, p50, i) for i, p50 in enumerate([19.0, 20.0, 21.0])]
    runs += [run("serve-teacher", 1, 50.0, 20.0, i) for i in range(3)]
    for r, ci in zip(runs, [(18.0, 20.0), (19.0, 21.0), (20.0, 22.0),
                            (19.0, 21.0), (18.0, 22.0), (19.0, 21.0)], strict=True):
        r["p50_ci_ms"] = list(ci)
    precision = bench.p50_precision(runs, bench.summarize(runs))
    assert precision["ci"] == (pytest.approx(0.1), "serve-teacher", 1)  # +/- 2 ms of 20
    assert precision["spread"] == pytest.approx(0.05)  # median of (21 - 19) / 20 and 0 / 20


def test_crossover_separates_the_log_from_the_faster_app():
    bench = load_bench("serve")
    # The log adds 4% (L = 1.04); app a is 10% slower than app b (A = 1.1). While a logs, a is
    # on and b off: on/off = L * A; while b logs: L / A. Medians over 3 repetitions each.
    runs = []
    for rep, noise in enumerate([1.0, 1.02, 0.98]):
        off = 10.0 * noise
        runs += [log_run("on", "a", 8, off * 1.04 * 1.1, rep), log_run("off", "a", 8, off, rep),
                 log_run("on", "b", 8, off * 1.04 / 1.1, rep), log_run("off", "b", 8, off, rep)]
    estimate = bench.log_overhead(runs)["8"]
    assert estimate["overhead"] == pytest.approx(0.04)
    assert estimate["a_vs_b"] == pytest.approx(0.1)
    assert estimate["ratios"]["a"] == pytest.approx([1.144] * 3)


def test_the_data_plane_names_serve_settings_from_the_environment(monkeypatch):
    bench = load_bench("serve")
    for name in [k for k in os.environ if k.startswith("RAY_SERVE_")]:
        monkeypatch.delenv(name)
    assert bench.use_dataplane(True, None) == "Serve proxy"
    monkeypatch.setenv("RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP", "0")
    monkeypatch.setenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", "1")
    assert bench.use_dataplane(True, None) == (
        "Serve proxy; from the environment: RAY_SERVE_ENABLE_DIRECT_INGRESS=1, "
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0")


def test_a_store_without_models_exits_2_and_names_make_demo(subprocesses, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "serve.py"), "--store",
                           str(tmp_path), "--smoke"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "no teacher 'cnn-teacher'" in done.stderr and "make demo" in done.stderr


def test_smoke_run_answers_every_target_without_errors(store_copy, local_ray, tmp_path):
    # the session's Ray runs Serve's proxy: the default data plane needs a Ray of its own
    result = smoke_bench("serve", store_copy, tmp_path, "--proxy-dataplane")
    assert set(result["ratios"]) == {"student_vs_teacher_throughput_c4",
                                     "rayserve_vs_fastapi_throughput_c4",
                                     "routed_vs_direct_throughput_c4",
                                     "colocated_vs_separate_routed_throughput_c4",
                                     "unloaded_p50_added_ms", "request_log_p50_overhead"}
    assert all(math.isfinite(v) for v in result["ratios"].values())
    points = {(r["target"], r["concurrency"]) for r in result["runs"]}
    assert points == {(t, c) for t in ("serve-student", "serve-teacher", "serve-routed",
                                       "separate-routed", "fastapi-student") for c in (1, 4)}
    assert all(r["cpu_ms_per_request"] > 0 for r in result["runs"])
    # both arrangements of the crossover, each with the log on in one app and off in the other
    assert sorted((r["logging_app"], r["log"]) for r in result["log_runs"]) == [
        ("a", "off"), ("a", "on"), ("b", "off"), ("b", "on")]
    every = result["runs"] + result["log_runs"]
    assert all(r["errors"] == 0 and r["rows_per_s"] > 0 for r in every), [
        r["first_error"] for r in every if r["errors"]]
    assert result["inputs"]["models"]["student"]["version"] == "bad"  # the newest student
