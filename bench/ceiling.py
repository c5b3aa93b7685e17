"""The machine's compute ceiling, measured in the same run: fp32 matmul GFLOP/s in torch (one
thread and all threads) at the shapes the stages run, the FLOPs per row of every model the
benches use, the student's inference throughput, and each stage's throughput as a fraction of
the ceiling. Writes bench/results/ceiling.json and the "ceiling" section of BENCHMARKS.md.

    .venv/bin/python bench/ceiling.py [--repetitions 3] [--smoke]

Ceiling: the best all-thread GFLOP/s over the measured shapes (the 2048^3 one, in practice).
Each shape's GFLOP/s is the best call of ~0.5 s of calls: enough for a few calls of even the
slowest, 2048^3 on one thread, and for more on all threads, where the ceiling comes from.
FLOPs per row: torch's FlopCounterMode (2 per multiply-add; matmuls and convolutions only,
so elementwise work is free in this count). Student inference: the quickstart's student in a
plain `torch.inference_mode()` loop, batches of 8192, all threads. Stage fractions read the
teacher_infer and distill_epoch results when they exist (run those first): rows/s x FLOPs/row
over the ceiling. `student_infer_fraction_of_ceiling` is the student's.

`--smoke`: seconds, for the test (small shapes, one repetition, BENCHMARKS.md untouched).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import RESULTS, ROOT, update_section  # noqa: E402
from distill_epoch import TEACHER_10X  # noqa: E402
from measure import cell, save, spread  # noqa: E402
from teacher_infer import LARGE_TEACHER  # noqa: E402
from workload import NUM_CLASSES, NUM_FEATURES, flops_per_row  # noqa: E402

from distillery.config import load_spec, parse_model_spec  # noqa: E402
from distillery.models import build_model, count_params  # noqa: E402

SPEC = ROOT / "jobs/configs/mnist1d.yaml"
# (m, k, n): peak, the large teacher's dense layer and the quickstart teacher's at the inference
# batch, the student's dense layer at a training worker's micro-batch.
SHAPES = [(2048, 2048, 2048), (8192, 320, 3072), (8192, 320, 128), (128, 304, 16)]
SMOKE_SHAPES = [(256, 256, 256), (128, 304, 16)]


def matmul_gflops(m: int, k: int, n: int, threads: int, seconds: float) -> float:
    """Best-of GFLOP/s of (m, k) @ (k, n) in fp32, calls repeated for ~`seconds`."""
    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / best / 1e9


def inference_rows_per_s(model: torch.nn.Module, rows: int, batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    x = torch.randn(rows, NUM_FEATURES)
    with torch.inference_mode():
        model(x[:batch])  # warm-up
        started = time.perf_counter()
        for chunk in x.split(batch):
            model(chunk)
    return rows / (time.perf_counter() - started)


def stage_fractions(flops: dict, ceiling: float) -> list[dict]:
    """Each stage's measured rows/s (from the other benches' results) as GFLOP/s and as a share
    of the ceiling."""
    out = []

    def add(stage: str, rows_per_s: float, flops_per_row: float, source: str):
        gflops = rows_per_s * flops_per_row / 1e9
        out.append({"stage": stage, "rows_per_s": rows_per_s, "flops_per_row": flops_per_row,
                    "gflops": gflops, "fraction": gflops / ceiling, "source": source})

    infer = RESULTS / "teacher_infer.json"
    if infer.exists():
        r = json.loads(infer.read_text())
        for teacher, model in (("quickstart", "quickstart_teacher"), ("large", "large_teacher")):
            for mode, label in (("raydata", "Ray Data"), ("plain", "plain loop")):
                add(f"teacher inference, {teacher} teacher, {label}, c=2",
                    r["summary"][teacher][mode]["2"]["rows_per_s"]["median"],
                    flops[model]["forward"], "teacher_infer.json")
    epoch = RESULTS / "distill_epoch.json"
    if epoch.exists():
        r = json.loads(epoch.read_text())
        train = flops["student"]["train"]
        for variant, extra, label in (
                ("raytrain", 0, "Ray Train + DeepSpeed, cached"),
                ("plain-cached", 0, "plain loop, cached"),
                ("plain-live", flops["teacher_10x"]["forward"], "plain loop, ~10x teacher live")):
            add(f"distillation epoch, {label}", r["summary"][variant]["rows_per_s"]["median"],
                train + extra, "distill_epoch.json")
    return out


def format_markdown(result: dict) -> str:
    s, inputs = result["summary"], result["inputs"]
    lines = [f"{result['machine']['cpus']} CPUs, torch fp32; best of ~{inputs['seconds']} s of "
             f"calls per shape, median (min-max) of {inputs['repetitions']} repetitions.", "",
             "| matmul (m, k, n) | 1 thread GFLOP/s | all threads GFLOP/s |", "|---|---:|---:|"]
    for shape in inputs["shapes"]:
        key = "x".join(map(str, shape))
        lines.append(f"| {key} | {cell(s['matmul'][key]['1'], 1)} | "
                     f"{cell(s['matmul'][key]['all'], 1)} |")
    lines += ["", f"Ceiling: {result['ceiling_gflops']:.1f} GFLOP/s (all threads).", "",
              "| model | params | forward FLOP/row | train FLOP/row |", "|---|---:|---:|---:|"]
    for name, m in inputs["models"].items():
        lines.append(f"| {name} | {m['params']:,} | {m['forward']:,} | {m['train']:,} |")
    lines += ["", "| stage | rows/s | GFLOP/s | fraction of ceiling |", "|---|---:|---:|---:|"]
    for f in result["stages"]:
        lines.append(f"| {f['stage']} | {f['rows_per_s']:,.0f} | {f['gflops']:.2f} | "
                     f"{f['fraction']:.3f} |")
    lines += ["", f"`student_infer_fraction_of_ceiling`: "
              f"{result['ratios']['student_infer_fraction_of_ceiling']:.3f}. Small convolutions "
              "and narrow matmuls run far below the large-matmul peak; the fraction says how "
              "much headroom a faster kernel (not more machines) could find."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--output", default=None, help="default: bench/results/ceiling.json "
                        "(bench/results/smoke/ with --smoke)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repetitions = 1
    shapes, seconds = (SMOKE_SHAPES, 0.05) if args.smoke else (SHAPES, 0.5)
    rows = 16_384 if args.smoke else 400_000
    all_threads = torch.get_num_threads()
    spec = load_spec(SPEC, [])
    archs = {"student": spec.student.model, "quickstart_teacher": spec.teacher.model,
             "teacher_10x": parse_model_spec(TEACHER_10X),
             "large_teacher": parse_model_spec(LARGE_TEACHER)}
    models = {name: build_model(arch, NUM_FEATURES, NUM_CLASSES) for name, arch in archs.items()}
    flops = {name: {"params": count_params(m), "forward": flops_per_row(m.eval()),
                    "train": flops_per_row(m.train(), train=True)} for name, m in models.items()}
    runs = []
    for rep in range(args.repetitions):
        for m, k, n in shapes:
            for label, threads in (("1", 1), ("all", all_threads)):
                runs.append({"kind": "matmul", "shape": f"{m}x{k}x{n}", "threads": label,
                             "repetition": rep,
                             "gflops": matmul_gflops(m, k, n, threads, seconds)})
        runs.append({"kind": "student_infer", "repetition": rep, "threads": "all",
                     "rows_per_s": inference_rows_per_s(models["student"].eval(), rows, 8192,
                                                        all_threads)})
    torch.set_num_threads(all_threads)
    matmul = {}
    for run in (r for r in runs if r["kind"] == "matmul"):
        matmul.setdefault(run["shape"], {}).setdefault(run["threads"], []).append(run["gflops"])
    summary = {"matmul": {shape: {t: spread(v) for t, v in by.items()}
                          for shape, by in matmul.items()},
               "student_infer_rows_per_s": spread([r["rows_per_s"] for r in runs
                                                   if r["kind"] == "student_infer"])}
    ceiling = max(by["all"]["median"] for by in summary["matmul"].values())
    student = summary["student_infer_rows_per_s"]["median"]
    stages = [{"stage": "student inference, plain loop, all threads", "rows_per_s": student,
               "flops_per_row": flops["student"]["forward"],
               "gflops": student * flops["student"]["forward"] / 1e9,
               "fraction": student * flops["student"]["forward"] / 1e9 / ceiling,
               "source": "this run"}, *stage_fractions(flops, ceiling)]
    inputs = {"shapes": [list(s) for s in shapes], "seconds": seconds,
              "repetitions": args.repetitions, "threads": all_threads, "student_rows": rows,
              "models": {name: {"model": archs[name].model_dump(), **f}
                         for name, f in flops.items()}, "smoke": args.smoke}
    result = save("ceiling", inputs, runs, summary,
                  {"student_infer_fraction_of_ceiling": stages[0]["fraction"]}, args.output,
                  ceiling_gflops=ceiling, stages=stages)
    markdown = format_markdown(result)
    if not args.smoke:
        update_section("ceiling", "## Compute ceiling (`bench/ceiling.py`)\n\n" + markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    main()
