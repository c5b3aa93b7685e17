"""The stage benches (bench/teacher_infer.py, distill_epoch.py, ceiling.py, quality.py,
scale.py): their statistics on hand-made runs, and a --smoke run of each end to end on the
session's local Ray, writing a results file with every ratio and leaving BENCHMARKS.md alone."""

from __future__ import annotations

import json
import math

import pytest

from helpers import ROOT, load_bench


def test_summary_is_min_median_max_per_group_in_first_seen_order():
    measure = load_bench("measure")
    runs = [{"mode": "b", "c": 2, "rows_per_s": v, "first": None} for v in (3.0, 1.0, 2.0)]
    runs.append({"mode": "a", "c": 1, "rows_per_s": 5.0, "first": 0.5})
    summary = measure.summarize(runs, ("mode", "c"), ("rows_per_s", "first"))
    assert list(summary) == ["b", "a"]
    assert summary["b"]["2"] == {"rows_per_s": {"min": 1.0, "median": 2.0, "max": 3.0}}
    assert summary["a"]["1"]["first"] == {"min": 0.5, "median": 0.5, "max": 0.5}


def test_a_smoke_writes_its_results_apart_from_the_measured_ones(tmp_path):
    md = load_bench("benchmarks_md")
    results = ROOT / "bench" / "results"
    assert md.results_path("serve", None, smoke=False) == results / "serve.json"
    assert md.results_path("serve", None, smoke=True) == results / "smoke" / "serve.json"
    assert md.results_path("serve", tmp_path / "x.json", smoke=True) == tmp_path / "x.json"
    assert "bench/results/smoke/" in (ROOT / ".gitignore").read_text().splitlines()


def test_break_even_rows_solves_the_fixed_plus_steady_model():
    bench = load_bench("teacher_infer")
    # plain 100 rows/s; Ray Data steady 100 rows/s after 2 s fixed: 1000 rows take 12 s.
    # N / 100 >= 0.8 (2 + N / 100)  =>  N >= 800
    run = {"steady_rows_per_s": 100.0, "seconds": 12.0, "rows": 1000.0}
    summary = {"t": {"raydata": {"2": {k: {"median": v} for k, v in run.items()}},
                     "plain": {"2": {"rows_per_s": {"median": 100.0}}}}}
    assert bench.break_even_rows(summary, "t", 2, 0.8) == pytest.approx(800.0)
    # slower steady state than 0.8x the loop: no row count closes the gap
    summary["t"]["raydata"]["2"]["steady_rows_per_s"]["median"] = 70.0
    assert bench.break_even_rows(summary, "t", 2, 0.8) is None


def test_loop_profile_keeps_training_worker_samples_inside_the_loop():
    bench = load_bench("distill_epoch")
    worker = 'process 1:"python";process 7:"ray::RayTrainWorker.run"'
    lines = [f"{worker};run;train_loop_per_worker (distillery/train.py:181);backward 6",
             f"{worker};run;train_loop_per_worker (distillery/train.py:181);all_reduce (c.py:3) 1",
             f"{worker};run;train_loop_per_worker (distillery/train.py:181);all_reduce (c.py:5) 1",
             f"{worker};run;train_loop_per_worker (distillery/train.py:170);take 2",
             f"{worker};run;import_module 50"]  # start-up, outside the loop
    profile = bench.loop_profile(lines)
    assert profile["samples"] == 10
    assert profile["by_loop_line"] == [
        {"frame": "train_loop_per_worker (distillery/train.py:181)", "share": 0.8},
        {"frame": "train_loop_per_worker (distillery/train.py:170)", "share": 0.2}]
    assert [e["frame"] for e in profile["by_leaf"]] == ["backward", "all_reduce (c.py)", "take"]


def check_smoke(module, output, expected_ratios: set[str]) -> dict:
    before = (ROOT / "BENCHMARKS.md").read_text()
    result = module.main(["--smoke", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(result))
    assert set(result["ratios"]) == expected_ratios
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
    assert {"machine", "versions", "inputs", "runs", "summary"} <= set(result)
    assert (ROOT / "BENCHMARKS.md").read_text() == before
    return result


def test_ceiling_smoke(subprocesses, tmp_path):  # platform.platform() runs `uname -p`
    result = check_smoke(load_bench("ceiling"), tmp_path / "ceiling.json",
                         {"student_infer_fraction_of_ceiling"})
    models = result["inputs"]["models"]
    # the ~10x teacher of distill_epoch is what its name says, by FlopCounterMode's count
    assert 8 <= models["teacher_10x"]["forward"] / models["student"]["forward"] <= 12
    assert models["large_teacher"]["params"] >= 1_000_000


def test_teacher_infer_smoke(local_ray, tmp_path):
    result = check_smoke(load_bench("teacher_infer"), tmp_path / "teacher_infer.json",
                         {f"raydata_vs_plain_{text}c{c}{steady}{teacher}" for c in (1, 2)
                          for steady in ("", "_steady")
                          for text, teacher in (("", ""), ("", "_quickstart"), ("text_", ""))})
    assert len(result["runs"]) == 3 * 2 * 2  # teachers x concurrency x (plain, Ray Data)
    assert result["inputs"]["text"]["max_length"] == 64
    assert result["profile"]["top"]


def test_distill_epoch_smoke(local_ray, tmp_path):
    result = check_smoke(load_bench("distill_epoch"), tmp_path / "distill_epoch.json",
                         {"cached_vs_live_speedup", "cached_vs_live_speedup_quickstart_teacher",
                          "raytrain_ds_vs_plain_time", "raytrain_ds_vs_plain_time_text"})
    assert [r["variant"] for r in result["runs"]] == list(load_bench("distill_epoch").VARIANTS)
    assert result["summary"]["raytrain"]["startup_s"]["median"] > 0


def test_quality_ratios_compare_mean_accuracies():
    bench = load_bench("quality")
    variants = {"student": {"test_accuracy": {"mean": 0.9}},
                "teacher": {"test_accuracy": {"mean": 0.96}},
                "baseline": {"test_accuracy": {"mean": 0.8}}}
    assert bench.ratios(variants) == pytest.approx(
        {"student_vs_teacher_accuracy": 0.9375, "student_vs_baseline_accuracy_gain": 0.1})
    runs = [{"run_id": "mnist1d-20261129-180241-8e2a"},
            {"run_id": "mnist1d-20261130-010203-ab12-baseline"}]
    assert bench.measured_on(runs) == "2026-11-30"


def test_quality_budgets_table_sets_the_reduced_run_beside_the_full_one():
    bench = load_bench("quality")

    def result(overrides: list[str], accuracies: tuple, day: str) -> dict:
        stages = [{"train-teacher": 40.0, "distill": 50.0}, {"train-teacher": 41.0,
                                                             "distill": 60.0},
                  {"train-teacher": 45.0, "distill": 50.0}]
        return {"inputs": {"overrides": overrides, "stage_seconds": stages},
                "variants": {role: {"test_accuracy": {"mean": a, "std": 0.01}}
                             for role, a in zip(bench.ROLES, accuracies, strict=True)},
                "ratios": {"student_vs_teacher_accuracy": accuracies[0] / accuracies[1],
                           "student_vs_baseline_accuracy_gain": accuracies[0] - accuracies[2]},
                "runs": [{"run_id": f"mnist1d-{day}-010203-ab12"}]}

    reduced = result(bench.BUDGET, (0.9, 0.95, 0.8), "20261201")
    full = result([], (0.92, 0.95, 0.82), "20261130")
    full["inputs"]["stage_seconds"][0]["data"] = 11.0  # runs before 2026-12-01 timed it per seed
    assert bench.budgets_table(reduced, full)[2:] == [
        "| reduced (this section), 2026-12-01 | 20,000 | 0.9000 ± 0.0100 | 0.9500 ± 0.0100 | "
        "0.8000 ± 0.0100 | 0.947 | +0.1000 | 95 |",
        "| full quickstart, 2026-11-30 | 50,000 | 0.9200 ± 0.0100 | 0.9500 ± 0.0100 | "
        "0.8200 ± 0.0100 | 0.968 | +0.1000 | 95 |"]


def test_quality_smoke(local_ray, tmp_path):
    before = (ROOT / "BENCHMARKS.md").read_text()
    output = tmp_path / "quality.json"
    result = load_bench("quality").main(["--smoke", "--store", str(tmp_path / "stores"),
                                         "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(result))
    assert set(result["ratios"]) == {"student_vs_teacher_accuracy",
                                     "student_vs_baseline_accuracy_gain"}
    assert all(math.isfinite(v) for v in result["ratios"].values())
    # one seed: a teacher, its student and the baseline, each scored on the test split
    assert [r["variant"] for r in result["runs"]] == ["student", "teacher", "baseline"]
    assert all(0 <= r["test_accuracy"] <= 1 for r in result["runs"])
    assert result["variants"]["student"]["test_agreement"]["mean"] > 0
    assert (ROOT / "BENCHMARKS.md").read_text() == before


def test_scale_smoke(local_ray, tmp_path):
    """The table through every stage from Parquet files, the driver's RSS measured and every
    row accounted for (the generator and the plain loop run in child processes)."""
    result = check_smoke(load_bench("scale"), tmp_path / "scale.json",
                         {"raydata_vs_plain", "driver_peak_rss_gib"})
    rows = result["rows"]
    assert rows["accounted"] and rows["in"] == 40_000
    assert rows["cached"] == rows["train"] == rows["cached_labelled"]
    assert set(result["summary"]["stages"]) == {"data", "train-teacher", "teacher-infer",
                                                "distill", "evaluate"}
