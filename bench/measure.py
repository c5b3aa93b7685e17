"""What every stage bench shares: the spread of repetitions and the results file.

A results file holds `bench`, `machine`, `versions`, `inputs`, every run (`runs`), their
`summary` (min / median / max per measured quantity) and the top-level `ratios` that the
acceptance targets read.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks_md import machine, results_path

from distillery.compare import write_result
from distillery.models.artifacts import library_versions


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def cell(stats: dict, digits: int) -> str:
    """A spread as a table cell: `median (min-max)`."""
    return (f"{stats['median']:,.{digits}f} "
            f"({stats['min']:,.{digits}f}-{stats['max']:,.{digits}f})")


def summarize(runs: list[dict], keys: tuple[str, ...], metrics: tuple[str, ...]) -> dict:
    """runs grouped by the values of `keys` (nested dicts, in first-seen order), each metric's
    spread over the group's repetitions. Metrics a run lacks (None) are left out."""
    summary: dict = {}
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(str(run[k]) for k in keys), []).append(run)
    for group, members in groups.items():
        node = summary
        for part in group:
            node = node.setdefault(part, {})
        for metric in metrics:
            values = [m[metric] for m in members if m.get(metric) is not None]
            if values:
                node[metric] = spread(values)
    return summary


def save(name: str, inputs: dict, runs: list[dict], summary: dict, ratios: dict,
         output: str | Path | None = None, **extra) -> dict:
    """Write `results_path(name, output, inputs["smoke"])`; returns what was written."""
    result = {"bench": name, "machine": machine(), "versions": library_versions(),
              "inputs": inputs, "ratios": ratios, "summary": summary, **extra, "runs": runs}
    write_result(result, results_path(name, output, inputs["smoke"]))
    return result


def verdict(value: float, target: float, at_least: bool = True) -> str:
    met = value >= target if at_least else value <= target
    sign = ">=" if at_least else "<="
    return f"{value:.2f} (target {sign} {target}: {'met' if met else '**missed**'})"
