"""bench/soak_curve.py: its argument checks, the highest load within the p99 target and the
table on hand-made levels, and a --smoke run end to end on the session's local Ray."""

from __future__ import annotations

import argparse

import pytest

from helpers import load_bench, smoke_bench


def level(load: float, ratio: float, errors: int = 0) -> dict:
    return {"load": load, "p99_vs_unloaded": ratio, "errors": errors}


def test_highest_met_is_the_last_of_an_unbroken_run_from_the_lowest_load():
    bench = load_bench("soak_curve")
    assert bench.highest_met([level(0.2, 0.9), level(0.4, 2.0), level(0.6, 2.01),
                              level(0.7, 1.5)]) == 0.4  # a later level that meets does not count
    assert bench.highest_met([level(0.2, 0.9), level(0.4, 1.2, errors=1)]) == 0.2
    assert bench.highest_met([level(0.2, 2.5), level(0.4, 1.0)]) is None
    assert bench.highest_met([level(0.2, 1.9), level(0.4, 2.5)], target=3.0) == 0.4


def test_loads_are_ascending_fractions():
    bench = load_bench("soak_curve")
    assert bench.loads_arg("0.2,0.5,1") == (0.2, 0.5, 1.0)
    for bad in ("0.5,0.2", "0.2,0.2", "0,0.5", "0.5,1.5", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="fractions"):
            bench.loads_arg(bad)


def test_a_varied_curve_needs_its_own_output(capsys):
    bench = load_bench("soak_curve")
    for argv in (["--loads", "0.3,0.6"], ["--seconds", "30"]):
        with pytest.raises(SystemExit):
            bench.main(argv)
        assert "give --output" in capsys.readouterr().err


def test_a_level_where_nothing_was_answered_is_a_row_of_dashes():
    bench = load_bench("soak_curve")
    answered = {"load": 0.2, "rps": 20.0, "p50_ms": 20.0, "p99_ms": 30.0,
                "p99_vs_unloaded": 1.5, "errors": 0, "max_lag_s": 0.001, "cpu_busy": 0.4}
    failed = {**answered, "load": 0.4, "rps": 0.0, "p50_ms": None, "p99_ms": None,
              "p99_vs_unloaded": None, "errors": 40}
    result = {"machine": {"cpus": 2, "platform": "p"}, "versions": {"ray": "r"},
              "inputs": {"dataplane": "d", "sizing": "s", "student_weight": 5.0,
                         "requests": {"unloaded": 1000}, "seconds": 100.0},
              "summary": {"unloaded": {"p50_ms": 15.0, "p99_ms": 20.0}, "max": {"rps": 100.0}},
              "runs": [answered, failed],
              "ratios": {"highest_load_within_target": bench.highest_met([answered, failed])}}
    lines = bench.format_markdown(result).splitlines()
    assert "| 20% | 20 | 20.0 | 30.0 | 1.50 | 0 | 0.001 | 40% |" in lines
    assert "| 40% | 0 | - | - | - | 40 | 0.001 | 40% |" in lines
    assert lines[-1] == "p99 within 2x of the unloaded p99 up to 20% of the maximum."


def test_smoke_curve_answers_every_level_with_the_canary_pinned(store_copy, local_ray,
                                                                 tmp_path):
    result = smoke_bench("soak_curve", store_copy, tmp_path, "--proxy-dataplane")
    assert [level["load"] for level in result["runs"]] == [0.2, 0.4]
    for level in result["runs"]:
        assert level["errors"] == 0, level["first_error"]
        assert level["answered"] == int(level["rate"] * 2)
        assert level["p99_vs_unloaded"] == level["p99_ms"] / result["summary"]["unloaded"][
            "p99_ms"]
        assert 0 < level["cpu_busy"] <= 1
    assert result["inputs"]["student_weight"] == 5.0
