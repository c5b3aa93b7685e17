"""compare-strategies: the shipped variants file and the table arithmetic."""

import pytest

from distillery.compare import format_markdown, load_variants, summarize
from distillery.config import SpecError, load_spec

from conftest import REFERENCE_SPEC, ROOT


def test_every_shipped_variant_is_a_valid_spec():
    variants = load_variants(ROOT / "bench" / "strategies.yaml")
    strategies = {load_spec(REFERENCE_SPEC, overrides).distill.strategy
                  for overrides in variants.values()}
    assert strategies == {"response", "feature", "progressive", "multi_teacher", "online"}


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
    table = format_markdown(result)
    assert "| response | 10 | 0.9000 ± 0.1000 | 0.9000 ± 0.0000 | 10 ± 0 |" in table
    assert "| baseline | 10 | 0.7000 ± 0.0000 | - | 5 ± 0 |" in table
