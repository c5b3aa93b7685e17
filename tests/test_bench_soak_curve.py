"""bench/soak_curve.py: its argument checks and the highest load within the p99 target, on
hand-made levels. Its serving path is bench/soak.py's `hold`, run end to end by that bench's
smoke test."""

from __future__ import annotations

import argparse

import pytest

from conftest import load_bench


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
