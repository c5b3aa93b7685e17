"""Strategy table: every variant of bench/strategies.yaml on the quickstart's teacher and
student, 3 seeds each, same data and epochs for all. Writes bench/results/strategies.json and
the "strategies" section of BENCHMARKS.md.

    .venv/bin/python bench/strategies.py [--seeds 3] [--only a,b] [--set key.path=value ...]

`--only` reruns some variants and keeps the other variants' runs from the last results file
(same budget and store, so the same teacher).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import ROOT, machine, update_section  # noqa: E402

from distillery.compare import (  # noqa: E402
    compare_strategies,
    format_markdown,
    load_variants,
    summarize,
    write_result,
)
from distillery.models.artifacts import library_versions  # noqa: E402
from distillery.runtime import ensure_ray  # noqa: E402

# The budget every variant shares: the reference spec (20 epochs) with a 20k-row transfer set
# instead of 50k, so that 8 variants x 3 seeds fit in a run a person can wait for on 2 cores
# (BENCHMARKS.md, Strategies: wall s / run).
BUDGET = ["data.transfer.num_samples=20000", "store=./runs/bench"]
RESULTS = ROOT / "bench/results/strategies.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default=None, help="comma-separated variants to rerun")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    ensure_ray()
    overrides = [*BUDGET, *args.overrides]
    variants = load_variants(ROOT / "bench/strategies.yaml")
    only = args.only.split(",") if args.only else None
    if only and set(only) - {*variants, "baseline"}:
        parser.error(f"--only: unknown {sorted(set(only) - {*variants, 'baseline'})}; "
                     f"variants: {[*variants, 'baseline']}")
    if only:
        variants = {name: v for name, v in variants.items() if name in only}
    result = compare_strategies(ROOT / "jobs/configs/mnist1d.yaml", overrides, variants,
                                list(range(args.seeds)), baseline=not only or "baseline" in only)
    if only:
        previous = json.loads(RESULTS.read_text())
        kept = [r for r in previous["runs"] if r["variant"] not in only]
        order = [*load_variants(ROOT / "bench/strategies.yaml"), "baseline"]
        runs = sorted(kept + result["runs"], key=lambda r: (order.index(r["variant"]),
                                                             r["seed"]))
        result = summarize(runs, {"params": result["teacher"]["params"],
                                  "metrics": {"test_accuracy": result["teacher"]["test_accuracy"]}})
    result.update(machine=machine(), versions=library_versions(), overrides=overrides)
    write_result(result, RESULTS)
    update_section("strategies", "## Strategies (`bench/strategies.py`)\n\n"
                   f"Reference spec with `{' '.join(overrides)}`; "
                   f"{result['machine']['cpus']} CPUs.\n\n" + format_markdown(result))
    print(format_markdown(result))


if __name__ == "__main__":
    main()
