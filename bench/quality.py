"""Quality: the quickstart's teacher, distilled student and label-only baseline over 3 seeds,
beside the strategy table of bench/strategies.py. Writes bench/results/quality.json and the
"quality" section of BENCHMARKS.md.

    .venv/bin/python bench/quality.py [--seeds 3] [--store ./runs/bench-quality] [--full]
        [--smoke]

Each seed s is the whole quickstart pipeline of jobs/configs/mnist1d.yaml with
`teacher.train.seed=s distill.seed=s`, in a fresh store of its own (`--store`/<time>/seed-s):
train the teacher, build its logit cache, distill the student, train the label-only baseline,
the library's Pipeline stages as `quickstart()` runs them, without its evaluation report
(`compare_strategies` trains one teacher per store for all seeds; its table, `summarize` and
`format_markdown`, is reused). The data is the canonical MNIST-1D set (`data.seed`) and
transfer set for every seed, made once: what varies is the initialisation and order of
training, the spread a user re-running the quickstart would see.

Budget: the strategy table's, `data.transfer.num_samples=20000` instead of the spec's 50,000
(BUDGET; the teacher, which trains on the labelled rows only, is the spec's): shorter seeds,
which `make bench` needs to stay within its time limit (the section has the seconds per seed
of both budgets), and the student and baseline rows then compare with the strategy table's
response and baseline rows. `--full` runs the spec as shipped and writes
bench/results/quality-full.json (not part of `make bench`, which has no time for it); the
section sets the two budgets side by side, each from its last results file.

The strategy table is read from bench/results/strategies.json, not re-measured (`make
bench-strategies`, too long for `make bench`); the section says when it was measured.

`--smoke`: seconds, for the test (the tests' tiny spec, one seed, BENCHMARKS.md untouched).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import RESULTS, ROOT, results_path, update_section  # noqa: E402
from measure import save, summarize  # noqa: E402

from distillery.compare import format_markdown  # noqa: E402
from distillery.compare import summarize as table  # noqa: E402
from distillery.config import load_spec  # noqa: E402
from distillery.data.sources import Source, open_source  # noqa: E402
from distillery.runtime import ensure_ray  # noqa: E402
from distillery.stages import Pipeline  # noqa: E402
from distillery.storage import Store  # noqa: E402

SPEC = ROOT / "jobs/configs/mnist1d.yaml"
BUDGET = ["data.transfer.num_samples=20000"]  # bench/strategies.py's transfer set
FULL_RESULTS = RESULTS / "quality-full.json"
# The tests' tiny spec (tests/conftest.py TINY: ~1k labelled rows, 2k transfer rows), one
# epoch and one worker per run: what is left is mostly Ray Train's start-up.
SMOKE = ["data.num_samples=1000", "data.transfer.num_samples=2000",
         "teacher.model.channels=[16,16]", "teacher.model.hidden=32",
         "teacher.train.epochs=1", "teacher.train.num_workers=1",
         "teacher.inference.batch_size=512", "distill.epochs=1", "distill.num_workers=1"]
# The student first, so that the table's "vs first" column is each alternative against it.
ROLES = ("student", "teacher", "baseline")
METRICS = ("test_accuracy", "test_agreement", "wall_seconds")


def seed_runs(overrides: list[str], seed: int,
              source: Source) -> tuple[list[dict], dict[str, float]]:
    """One seed of the quickstart on `source` (the spec's data), its stages in `quickstart()`'s
    order (the evaluation report left out): the teacher's, the student's and the baseline's run
    rows (`variant`, `seed`, `run_id`, `params`, `test_accuracy`, `test_agreement`,
    `wall_seconds`: its stage, the student's including the logit cache) and the wall seconds of
    every stage."""
    pipeline = Pipeline(load_spec(SPEC, [*overrides, f"teacher.train.seed={seed}",
                                         f"distill.seed={seed}"]))
    pipeline.source = source  # set over the cached property, which would make it again
    stages: dict[str, float] = {}

    def timed(name, fn):
        started = time.perf_counter()
        out = fn()
        stages[name] = round(time.perf_counter() - started, 1)
        return out

    cards = {"teacher": timed("train-teacher", pipeline.train_teacher)}
    timed("teacher-infer", pipeline.teacher_infer)
    cards["student"] = timed("distill", pipeline.distill)
    cards["baseline"] = timed("baseline", pipeline.baseline)
    walls = {"teacher": stages["train-teacher"],
             "student": round(stages["teacher-infer"] + stages["distill"], 1),
             "baseline": stages["baseline"]}
    runs = []
    for role, card in cards.items():
        metrics = card["metrics"]
        runs.append({"variant": role, "seed": seed,
                     # a teacher's card keeps the id of its training run among its metrics
                     "run_id": metrics["run_id"] if role == "teacher" else card["run_id"],
                     "fingerprint": card["fingerprint"], "params": card["params"],
                     "test_accuracy": metrics["test_accuracy"],
                     "test_agreement": metrics.get("test_agreement"),  # none for the teacher
                     "wall_seconds": walls[role]})
    return runs, stages


def ratios(variants: dict) -> dict:
    """Mean test accuracies over seeds: student / teacher, and student - baseline (the
    accuracy the teacher's logits add to the same student on the same steps)."""
    acc = {role: variants[role]["test_accuracy"]["mean"] for role in ROLES}
    return {"student_vs_teacher_accuracy": acc["student"] / acc["teacher"],
            "student_vs_baseline_accuracy_gain": acc["student"] - acc["baseline"]}


def measured_on(runs: list[dict]) -> str:
    """The date of the newest run, from its run id (`<name>-YYYYmmdd-HHMMSS-xxxx`)."""
    newest = max(re.search(r"-(\d{8})-\d{6}-", r["run_id"]).group(1) for r in runs)
    return f"{newest[:4]}-{newest[4:6]}-{newest[6:]}"


def seed_seconds(inputs: dict) -> float:
    """Median over seeds of a seed's stages in seconds (the data, made once, left out)."""
    return statistics.median(sum(v for stage, v in seeds.items() if stage != "data")
                             for seeds in inputs["stage_seconds"])


def transfer_rows(inputs: dict) -> int:
    return load_spec(SPEC, inputs["overrides"]).data.transfer.num_samples


def budgets_table(reduced: dict, full: dict) -> list[str]:
    """The two budgets side by side: test accuracy (mean ± std over seeds) of each role, the
    two ratios and the seconds per seed."""
    lines = ["| budget | transfer rows | student | teacher | baseline | student / teacher | "
             "student - baseline | s per seed |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, result in (("reduced (this section)", reduced), ("full quickstart", full)):
        acc = {role: result["variants"][role]["test_accuracy"] for role in ROLES}
        r, inputs = result["ratios"], result["inputs"]
        lines.append(
            f"| {label}, {measured_on(result['runs'])} | {transfer_rows(inputs):,} | "
            + " | ".join(f"{acc[role]['mean']:.4f} ± {acc[role]['std']:.4f}" for role in ROLES)
            + f" | {r['student_vs_teacher_accuracy']:.3f} | "
            f"{r['student_vs_baseline_accuracy_gain']:+.4f} | {seed_seconds(inputs):.0f} |")
    return lines


def format_section(result: dict, full: dict, strategies: dict) -> str:
    """The section from the reduced-budget `result`, the last `--full` run and the strategy
    table's results."""
    inputs, r = result["inputs"], result["ratios"]
    seeds = len(inputs["seeds"])
    lines = [
        "## Quality (`bench/quality.py`)", "",
        f"A reduced-budget quickstart: `{inputs['spec']}` with `{' '.join(inputs['overrides'])}`"
        f" (the strategy table's budget; the spec has {transfer_rows({'overrides': []}):,} "
        f"transfer rows), run whole {seeds} times, with "
        "`teacher.train.seed=s distill.seed=s` for s in "
        f"{', '.join(map(str, inputs['seeds']))}: a fresh teacher, its logit cache, the "
        "distilled student and the label-only baseline (the student's architecture on labels "
        "only, the same optimizer steps) per seed; the canonical MNIST-1D data for all. The "
        "teacher's line and row are means over its seeds; \"vs first\" is against the "
        "student. "
        f"{result['machine']['cpus']} CPUs, {seed_seconds(inputs):.0f} s per seed (median).", "",
        format_markdown(result), "",
        "Wall s / run: the run's stage; the student's includes building its logit cache.",
        "",
        f"`student_vs_teacher_accuracy`: {r['student_vs_teacher_accuracy']:.3f} (the "
        "quickstart's gate asks >= 0.95); `student_vs_baseline_accuracy_gain`: "
        f"{r['student_vs_baseline_accuracy_gain']:+.4f}.", "",
        "Against the full quickstart, the spec as shipped (`bench/quality.py --full`, not part "
        "of `make bench`), each from its last run; the teacher trains on the labelled rows "
        "alone, so only the student and the baseline (the same steps as the student) see the "
        "smaller budget:", "",
        *budgets_table(result, full), "",
        "The strategy table is the Strategies section above, measured "
        f"{measured_on(strategies['runs'])} by `bench/strategies.py` (`make bench-strategies`: "
        "~25 minutes here, so not part of `make bench`), on the spec with "
        f"`{' '.join(strategies['overrides'])}`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--store", default="./runs/bench-quality",
                        help="each invocation's stores go under <store>/<time>/seed-<s>")
    parser.add_argument("--output", default=None, help="default: bench/results/quality.json, "
                                                       "quality-full.json with --full "
                                                       "(under smoke/ with --smoke)")
    parser.add_argument("--full", action="store_true",
                        help="the spec as shipped (50k transfer rows), not the reduced budget")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = 1
    ensure_ray()
    stores = Path(args.store) / time.strftime("%Y%m%d-%H%M%S")
    overrides = SMOKE if args.smoke else [] if args.full else BUDGET
    started = time.perf_counter()
    source = open_source(load_spec(SPEC, overrides).data, Store(str(stores)))
    data_seconds = round(time.perf_counter() - started, 1)
    runs, stages = [], []
    for seed in range(args.seeds):
        rows, seed_stages = seed_runs([*overrides, f"store={stores / f'seed-{seed}'}"], seed,
                                      source)
        runs += rows
        stages.append(seed_stages)
        print(f"[seed {seed}] " + ", ".join(f"{r['variant']} {r['test_accuracy']:.4f}"
                                            for r in rows), flush=True)
    runs.sort(key=lambda r: ROLES.index(r["variant"]))
    teachers = [r for r in runs if r["variant"] == "teacher"]
    compared = table(runs, {"params": teachers[0]["params"], "metrics": {
        "test_accuracy": statistics.fmean(r["test_accuracy"] for r in teachers)}})
    inputs = {"spec": str(SPEC.relative_to(ROOT)), "overrides": overrides,
              "seeds": list(range(args.seeds)), "stores": str(stores),
              "data_seconds": data_seconds, "stage_seconds": stages, "smoke": args.smoke}
    result = save("quality", inputs, runs, summarize(runs, ("variant",), METRICS),
                  ratios(compared["variants"]),
                  results_path("quality-full" if args.full else "quality", args.output,
                               args.smoke),
                  teacher=compared["teacher"], variants=compared["variants"])
    if not args.smoke:  # the section shows both budgets: the other one's last results
        other = json.loads((RESULTS / "quality.json" if args.full else FULL_RESULTS).read_text())
        reduced, full = (other, result) if args.full else (result, other)
        strategies = json.loads((RESULTS / "strategies.json").read_text())
        update_section("quality", format_section(reduced, full, strategies))
    print(format_markdown(result))
    return result


if __name__ == "__main__":
    main()
