"""bench/serve.py: its summary and ratios on hand-made runs, the missing-models exit, and a
--smoke run end to end on a tiny store (real Ray Serve, a real uvicorn server, real HTTP)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, add_students

BENCH = ROOT / "bench" / "serve.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(target: str, c: int, rows_per_s: float, p50_ms: float, repetition: int = 0) -> dict:
    return {"target": target, "concurrency": c, "repetition": repetition, "errors": 0,
            "rows_per_s": rows_per_s, "p50_ms": p50_ms, "p99_ms": 2 * p50_ms}


def test_summary_is_median_min_max_over_repetitions_and_ratios_use_medians():
    bench = load_bench()
    runs = [run("serve-student", 4, v, 10.0, i) for i, v in enumerate([300.0, 100.0, 200.0])]
    runs += [run("serve-teacher", 4, 50.0, 20.0), run("fastapi-student", 4, 400.0, 5.0),
             run("serve-routed", 4, 90.0, 11.0), run("serve-routed-nolog", 4, 100.0, 10.0)]
    summary = bench.summarize(runs)
    assert summary["serve-student"]["4"]["rows_per_s"] == {"median": 200.0, "min": 100.0,
                                                           "max": 300.0}
    assert summary["serve-student"]["4"]["p99_ms"]["median"] == 20.0
    ratios = bench.ratios(summary, 4)
    assert ratios["student_vs_teacher_throughput_c4"] == 4.0
    assert ratios["rayserve_vs_fastapi_throughput_c4"] == 0.5
    assert ratios["request_log_p50_overhead"] == pytest.approx(0.1)


def test_a_store_without_models_exits_2_and_names_make_demo(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--store", str(tmp_path), "--smoke"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "no teacher 'cnn-teacher'" in done.stderr and "make demo" in done.stderr


@pytest.mark.integration
def test_smoke_run_answers_every_target_without_errors(store_copy, no_local_ray, tmp_path):
    add_students(store_copy)
    output = tmp_path / "serve.json"
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    done = subprocess.run([sys.executable, str(BENCH), "--smoke", "--store", str(store_copy),
                           "--output", str(output)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert set(result["ratios"]) == {"student_vs_teacher_throughput_c4",
                                     "rayserve_vs_fastapi_throughput_c4",
                                     "request_log_p50_overhead"}
    assert all(math.isfinite(v) for v in result["ratios"].values())
    points = {(r["target"], r["concurrency"]) for r in result["runs"]}
    assert points == {(t, c) for t in ("serve-student", "serve-teacher", "serve-routed",
                                       "serve-routed-nolog", "fastapi-student") for c in (1, 4)}
    assert all(r["errors"] == 0 and r["rows_per_s"] > 0 for r in result["runs"]), [
        (r["target"], r["first_error"]) for r in result["runs"] if r["errors"]]
    assert result["inputs"]["models"]["student"]["version"] == "bad"  # the newest student
    assert (ROOT / "BENCHMARKS.md").read_text() == benchmarks  # --smoke leaves it alone
    assert not (store_copy / "serve").exists()  # nothing written into the user's store
