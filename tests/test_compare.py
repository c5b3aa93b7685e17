"""compare-strategies: the shipped variants file and the table arithmetic."""

import pytest

from distillery.compare import format_markdown, load_variants, summarize
from distillery.config import SpecError, load_spec, parse_spec

from helpers import REFERENCE_SPEC, ROOT, load_bench


def test_every_shipped_variant_is_a_valid_spec():
    variants = load_variants(ROOT / "bench" / "strategies.yaml")
    strategies = {load_spec(REFERENCE_SPEC, overrides).distill.strategy
                  for overrides in variants.values()}
    assert strategies == {"response", "feature", "progressive", "multi_teacher", "online"}


def test_every_text_variant_is_a_valid_text_spec():
    """bench/strategies.py --task text's variants on its spec and budget (validated without
    the task's files, which `make demo-text` writes)."""
    task = load_bench("strategies").TASKS["text"]
    specs = {name: parse_spec(ROOT / task.config, [*task.budget, *overrides])
             for name, overrides in load_variants(ROOT / task.variants).items()}
    assert {n: s.distill.strategy for n, s in specs.items()} == {"response": "response",
                                                                  "feature": "feature"}
    pairs = specs["feature"].distill.feature.pairs
    assert [p.attention for p in pairs] == [False, False, True, True]
    assert specs["feature"].data.transfer is None


def test_a_variants_file_that_is_not_a_mapping_of_lists_is_refused(tmp_path):
    bad = tmp_path / "v.yaml"
    bad.write_text("response: distill.kl=jsd\n")
    with pytest.raises(SpecError, match="must map each variant name to a list"):
        load_variants(bad)


def test_summary_is_mean_and_sample_std_per_variant():
    runs = [{"variant": "response", "seed": s, "run_id": str(s), "params": 10,
             "test_accuracy": acc, "test_agreement": 0.9, "wall_seconds": 10.0}
            for s, acc in enumerate([0.8, 0.9, 1.0])]
    runs.append({"variant": "baseline", "seed": 0, "run_id": "b", "params": 10,
                 "test_accuracy": 0.7, "test_agreement": None, "wall_seconds": 5.0})
    result = summarize(runs, {"params": 100, "metrics": {"test_accuracy": 0.95}})
    response = result["variants"]["response"]["test_accuracy"]
    assert response["mean"] == pytest.approx(0.9)
    assert response["std"] == pytest.approx(0.1)
    assert "test_agreement" not in result["variants"]["baseline"]
    assert result["variants"]["baseline"]["vs_first"] == {
        "variant": "response", "diff": pytest.approx(-0.2), "p_value": None}
    table = format_markdown(result)
    assert "| response | 10 | 0.9000 ± 0.1000 | - | 0.9000 ± 0.0000 | 10 ± 0 |" in table
    assert "| baseline | 10 | 0.7000 ± 0.0000 | -0.2000 | - | 5 ± 0 |" in table


def test_welch_p_value_against_the_first_variant():
    # Welch's t for [1, 2, 3] vs [4, 5, 6]: t = -3 / sqrt(2/3), df = 4 -> p = 0.0213
    runs = [{"variant": v, "seed": i, "run_id": "", "params": 1, "test_accuracy": acc,
             "test_agreement": None, "wall_seconds": 1.0}
            for v, accs in (("a", [4, 5, 6]), ("b", [1, 2, 3])) for i, acc in enumerate(accs)]
    versus = summarize(runs, {"params": 1, "metrics": {"test_accuracy": 1}})["variants"]["b"]
    assert versus["vs_first"]["diff"] == pytest.approx(-3.0)
    assert versus["vs_first"]["p_value"] == pytest.approx(0.0213, abs=1e-4)
