"""The language-model quickstart: tokenizer and packed data -> teacher -> top-k cache ->
token-KD student + next-token-only student, ending with the report comparing all three."""

from __future__ import annotations

import time

from distillery.lm.pipeline import LMPipeline
from distillery.quickstart import StageTimer, write_summary


def lm_quickstart(pipeline: LMPipeline, output_dir: str) -> dict:
    """Run every stage, print a side-by-side table and write `output_dir/summary.json`."""
    started = time.perf_counter()
    timer = StageTimer()
    timer("data", lambda: (pipeline.blocks("train"), pipeline.blocks("val")))
    timer("train-teacher", pipeline.ensure_teacher)
    cache = timer("teacher-infer", pipeline.teacher_infer)
    timer("distill", pipeline.distill)
    timer("baseline", pipeline.baseline)
    report = timer("evaluate", pipeline.evaluate)

    models = report["models"]
    ppl = {name: models[name]["val_perplexity"] for name in ("teacher", "student", "baseline")}
    summary = {
        **{name: {k: models[name][k] for k in ("params", "val_perplexity",
                                                "agreement_with_teacher",
                                                "tokens_per_s_forward", "tokens_per_s_generate",
                                                "location")}
           for name in ("teacher", "student", "baseline")},
        # the acceptance of token KD: same budget, perplexity nearer the teacher's
        "student_closer_to_teacher": abs(ppl["student"] - ppl["teacher"])
        < abs(ppl["baseline"] - ppl["teacher"]),
        "cache": {k: cache[k] for k in ("key", "tokens", "k", "temperature",
                                        "bytes_per_token_uncompressed",
                                        "parquet_bytes_per_token")},
        "stages": timer.seconds,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "store": pipeline.store.root,
        "report": report["location"],
    }
    write_summary(summary, output_dir, format_lm_table(summary))
    return summary


def format_lm_table(summary: dict) -> str:
    teacher_params = summary["teacher"]["params"]
    rows = [("model", "params", "x smaller", "val ppl", "agreement", "tok/s fwd", "tok/s gen")]
    for role in ("teacher", "student", "baseline"):
        r = summary[role]
        rows.append((role, f"{r['params']:,}", f"{teacher_params / r['params']:.1f}",
                     f"{r['val_perplexity']:.2f}", f"{r['agreement_with_teacher']:.3f}",
                     f"{r['tokens_per_s_forward']:,.0f}", f"{r['tokens_per_s_generate']:,.0f}"))
    lines = StageTimer.table(rows)
    cache = summary["cache"]
    lines += [f"\ntop-k cache: k={cache['k']}, T={cache['temperature']:g}, {cache['tokens']:,} "
              f"tokens, {cache['parquet_bytes_per_token']:.1f} B/token in Parquet "
              f"({cache['bytes_per_token_uncompressed']} B uncompressed)",
              "distilled student's perplexity is "
              + ("closer to" if summary["student_closer_to_teacher"] else "NOT closer to")
              + " the teacher's than the next-token-only student's",
              StageTimer.line(summary)]
    return "\n".join(lines)
