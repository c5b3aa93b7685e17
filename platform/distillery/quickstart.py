"""The end-to-end quickstart: teacher -> logit cache -> distilled student + label-only baseline,
ending with the evaluation report comparing all three."""

from __future__ import annotations

import json
import time
from pathlib import Path

from distillery.evaluation.report import evaluate
from distillery.evaluation.selection import select_models
from distillery.stages import Pipeline


def quickstart(pipeline: Pipeline, output_dir: str) -> dict:
    """Run every stage, print a side-by-side table and write `output_dir/summary.json`."""
    started = time.perf_counter()
    timed = StageTimer()
    timed("data", lambda: pipeline.splits)
    teacher = timed("train-teacher", pipeline.train_teacher)
    timed("teacher-infer", pipeline.teacher_infer)
    student = timed("distill", pipeline.distill)
    baseline = timed("baseline", pipeline.baseline)

    report = timed("evaluate", lambda: evaluate(
        pipeline, select_models(pipeline, ["student", "baseline"])))

    summary = {
        "teacher": {"params": teacher["params"],
                    "accuracy": teacher["metrics"]["test_accuracy"]},
        "student": {"params": student["params"],
                    "accuracy": student["metrics"]["test_accuracy"],
                    "agreement": student["metrics"]["test_agreement"],
                    "run_id": student["run_id"]},
        "baseline": {"params": baseline["params"],
                     "accuracy": baseline["metrics"]["test_accuracy"],
                     "run_id": baseline["run_id"]},
        "ratios": ratios(report),
        "stages": timed.seconds,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "store": pipeline.store.root,
        "report": {"html": f"{report['location']}/report.html", "run_id": report["run_id"],
                   "gates_passed": report["gates"]["passed"]},
    }
    write_summary(summary, output_dir, format_table(summary))
    print(f"report: {summary['report']['html']}")
    return summary


def ratios(report: dict) -> dict[str, float]:
    """The student against the teacher and the baseline, from the evaluation report:
    accuracy kept, points over the label-only baseline, and throughput at batch 1 (when
    timed) and at the largest batch timed."""
    quality = report["quality"]
    efficiency = report["efficiency"]
    throughput = efficiency["models"]["student"]["vs_teacher"]["throughput"]
    out = {"student_vs_teacher_accuracy": quality["student"]["accuracy"]
           / quality["teacher"]["accuracy"],
           "student_minus_baseline_accuracy": quality["student"]["accuracy"]
           - quality["baseline"]["accuracy"]}
    if "1" in throughput:
        out["student_vs_teacher_throughput_b1"] = throughput["1"]
    out["student_vs_teacher_throughput_bmax"] = throughput[efficiency["largest_batch"]]
    return {k: round(v, 4) for k, v in out.items()}


class StageTimer:
    """Runs stages under a banner and keeps each one's seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn):
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        return out

    @staticmethod
    def table(rows: list[tuple[str, ...]]) -> list[str]:
        """Left-aligned columns, a rule under the header row."""
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return lines

    @staticmethod
    def line(summary: dict) -> str:
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in summary["stages"].items())
        return f"\nwall time {summary['wall_seconds']:.0f}s ({stages})"


def write_summary(summary: dict, output_dir: str, table: str) -> None:
    """`output_dir/summary.json` (atomically), then the table."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")
    print("\n" + table)
    print(f"\nsummary: {out / 'summary.json'}")


def format_table(summary: dict) -> str:
    teacher_params = summary["teacher"]["params"]
    rows = [("model", "params", "x smaller", "test acc", "agreement")]
    for role in ("teacher", "student", "baseline"):
        r = summary[role]
        rows.append((role, f"{r['params']:,}", f"{teacher_params / r['params']:.1f}",
                     f"{r['accuracy']:.4f}",
                     f"{r['agreement']:.4f}" if "agreement" in r else "-"))
    return "\n".join([*StageTimer.table(rows), StageTimer.line(summary)])
