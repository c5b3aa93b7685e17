"""Strategy table: every variant of a task's variants file on its reference teacher and
student, 3 seeds each, same data and epochs for all. Writes bench/results/<results>.json and
the task's section of BENCHMARKS.md.

    .venv/bin/python bench/strategies.py [--task mnist1d|text] [--seeds 3] [--only a,b]
                                         [--set key.path=value ...]

`mnist1d` (the default): bench/strategies.yaml on the quickstart's spec. `text`: response
against TinyBERT-style feature KD (bench/strategies-text.yaml) on jobs/configs/text.yaml, whose
files `make demo-text` writes. `--only` reruns some variants and keeps the other variants' runs
from the last results file (same budget and store, so the same teacher).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Task:
    config: str
    variants: str
    budget: tuple[str, ...]
    """Overrides every variant shares."""
    results: str
    title: str


TASKS = {
    # the reference spec (20 epochs) with a 20k-row transfer set instead of 50k, so that 8
    # variants x 3 seeds fit in a run a person can wait for on 2 cores
    "mnist1d": Task("jobs/configs/mnist1d.yaml", "bench/strategies.yaml",
                    ("data.transfer.num_samples=20000", "store=./runs/bench"),
                    "strategies", "Strategies"),
    # feature KD runs the MiniLM teacher live in every step (attention maps are not cached):
    # the labelled train split alone keeps 2 variants and the baseline x 3 seeds to a run a
    # person can wait for. The spec's 8 epochs, not fewer: from scratch, the feature terms
    # hold the student at the majority class through its first epochs (README, Text
    # classification), so a shorter run would measure only that. Its own store, as for
    # mnist1d: in the demo's, the newest student (the one `serve` picks) would be a bench run
    "text": Task("jobs/configs/text.yaml", "bench/strategies-text.yaml",
                 ("data.transfer=null", "store=./runs/bench"), "strategies-text",
                 "Strategies on text"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="mnist1d")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default=None, help="comma-separated variants to rerun")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    task = TASKS[args.task]
    results = ROOT / f"bench/results/{task.results}.json"
    ensure_ray()
    overrides = [*task.budget, *args.overrides]
    variants = load_variants(ROOT / task.variants)
    only = args.only.split(",") if args.only else None
    if only and set(only) - {*variants, "baseline"}:
        parser.error(f"--only: unknown {sorted(set(only) - {*variants, 'baseline'})}; "
                     f"variants: {[*variants, 'baseline']}")
    if only:
        variants = {name: v for name, v in variants.items() if name in only}
    result = compare_strategies(ROOT / task.config, overrides, variants,
                                list(range(args.seeds)), baseline=not only or "baseline" in only)
    if only:
        previous = json.loads(results.read_text())
        kept = [r for r in previous["runs"] if r["variant"] not in only]
        order = [*load_variants(ROOT / task.variants), "baseline"]
        runs = sorted(kept + result["runs"], key=lambda r: (order.index(r["variant"]),
                                                             r["seed"]))
        result = summarize(runs, {"params": result["teacher"]["params"],
                                  "metrics": {"test_accuracy": result["teacher"]["test_accuracy"]}})
    result.update(machine=machine(), versions=library_versions(), overrides=overrides)
    write_result(result, results)
    command = "bench/strategies.py" + ("" if args.task == "mnist1d" else f" --task {args.task}")
    update_section(task.results, f"## {task.title} (`{command}`)\n\n"
                   f"`{task.config}` with `{' '.join(overrides)}`; "
                   f"{result['machine']['cpus']} CPUs.\n\n" + format_markdown(result))
    print(format_markdown(result))


if __name__ == "__main__":
    main()
