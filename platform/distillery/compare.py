"""`distillery compare-strategies`: every strategy on the same teacher, student, data and
budget, side by side.

A variants file maps a name to `--set` overrides of the spec (e.g. `bench/strategies.yaml`);
each variant is distilled once per seed (`distill.seed`), plus the label-only baseline.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import yaml
from scipy import stats

from distillery.config import SpecError, load_spec
from distillery.stages import Pipeline
from distillery.store_layout import read_card

BASELINE = "baseline"


def load_variants(path: str | Path) -> dict[str, list[str]]:
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(o, str) for o in v) for v in raw.values()):
        raise SpecError(f"{path}: must map each variant name to a list of key.path=value "
                        f"overrides")
    return raw


def compare_strategies(config: str | Path, overrides: list[str], variants: dict[str, list[str]],
                       seeds: list[int], baseline: bool = True) -> dict:
    """Distill every variant (and the baseline) for every seed; returns the table as a dict
    (see `summarize`)."""
    # every spec is validated before the first run, so a typo fails in seconds, not an hour in
    runs_of = {**variants, BASELINE: []} if baseline else variants
    specs = {(name, seed): load_spec(config, [*overrides, *extra, f"distill.seed={seed}"])
             for name, extra in runs_of.items() for seed in seeds}
    runs = []
    for (name, seed), spec in specs.items():
        pipeline = Pipeline(spec)
        pipeline.ensure_teachers()
        print(f"\n== compare-strategies: {name}, seed {seed} ==", flush=True)
        started = time.perf_counter()
        card = pipeline.baseline() if name == BASELINE else pipeline.distill()
        runs.append({"variant": name, "seed": seed, "run_id": card["run_id"],
                     "params": card["params"],
                     "test_accuracy": card["metrics"]["test_accuracy"],
                     "test_agreement": card["metrics"].get("test_agreement"),
                     "wall_seconds": round(time.perf_counter() - started, 1)})
    teacher = read_card(pipeline.store, pipeline.teacher_parts())
    return summarize(runs, teacher)


def summarize(runs: list[dict], teacher: dict) -> dict:
    """Mean and sample standard deviation per variant, in first-seen order, and each
    variant's test accuracy against the first variant's (`vs_first`: difference of means and
    Welch's t-test p-value, with 2+ seeds on both sides)."""
    table = {}
    accuracies = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == name]
        entry = {"params": rows[0]["params"], "seeds": len(rows)}
        for metric in ("test_accuracy", "test_agreement", "wall_seconds"):
            values = [r[metric] for r in rows if r[metric] is not None]
            if values:
                entry[metric] = {"mean": statistics.fmean(values),
                                 "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        accuracies[name] = [r["test_accuracy"] for r in rows]
        table[name] = entry
    first = next(iter(accuracies))
    for name, values in list(accuracies.items())[1:]:
        diff = statistics.fmean(values) - statistics.fmean(accuracies[first])
        p = (float(stats.ttest_ind(values, accuracies[first], equal_var=False).pvalue)
             if min(len(values), len(accuracies[first])) > 1 else None)
        table[name]["vs_first"] = {"variant": first, "diff": diff, "p_value": p}
    return {"teacher": {"params": teacher["params"],
                        "test_accuracy": teacher["metrics"]["test_accuracy"]},
            "variants": table, "runs": runs}


def format_markdown(result: dict) -> str:
    t = result["teacher"]
    lines = [f"Teacher: {t['params']:,} params, test accuracy {t['test_accuracy']:.4f}.", "",
             "| variant | params | test accuracy | vs first (p) | agreement with teacher | "
             "wall s / run |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, v in result["variants"].items():
        lines.append(f"| {name} | {v['params']:,} | {_cell(v, 'test_accuracy', 4)} | "
                     f"{_versus(v)} | {_cell(v, 'test_agreement', 4)} | "
                     f"{_cell(v, 'wall_seconds', 0)} |")
    seeds = max(v["seeds"] for v in result["variants"].values())
    lines.append(f"\nMean ± sample std over {seeds} seed(s) (`distill.seed`); \"vs first\": "
                 "difference of mean test accuracy from the first variant, with Welch's "
                 "t-test p-value.")
    return "\n".join(lines)


def _cell(variant: dict, metric: str, digits: int) -> str:
    m = variant.get(metric)
    return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}" if m else "-"


def _versus(variant: dict) -> str:
    v = variant.get("vs_first")
    if not v:
        return "-"
    p = f" (p={v['p_value']:.2f})" if v["p_value"] is not None else ""
    return f"{v['diff']:+.4f}{p}"


def write_result(result: dict, output: str | Path) -> None:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
