"""One distillation epoch of the quickstart's student, data and batch size, four ways: the
library's Ray Train + DeepSpeed trainer on 2 workers, and a plain single-process PyTorch loop
with the cached logits, with a teacher of ~10x the student's FLOPs run live on every batch, and
with the quickstart's teacher live. Writes bench/results/distill_epoch.json and the
"distill_epoch" section of BENCHMARKS.md.

    .venv/bin/python bench/distill_epoch.py [--epochs 4] [--repetitions 3] [--smoke]

Data: the quickstart spec's distillation rows (labelled train split + transfer set) with the
logits of a teacher (random weights: time does not depend on them) from the library's own cache.
Every variant runs response KD (`distill.temperature`, `alpha`) at the spec's global batch size,
AdamW and the spec's LR schedule, and scores the validation split at the end of each epoch.
- raytrain: `Pipeline.distill()` on the spec (2 workers of 1 CPU, a DeepSpeed engine each,
  ZeRO stage 0, each worker half the batch). Epoch time: wall seconds between consecutive
  epoch reports as the Train controller receives them, epochs 2 .. E-1 (the first pays warm-up,
  the last a checkpoint); `startup_s`: from the call to the start of epoch 1 (materializing the
  cache, the worker group, DeepSpeed, each worker's one pass to materialize its shard, which
  the epochs then do not pay); `in_worker_epoch_s`: the trainer's own
  `epoch_seconds`.
- plain: the same rows as tensors in this process (torch's default threads), a shuffled
  permutation per epoch, the library's loss terms. `plain-cached` reads the cached logits;
  `plain-live` and `plain-live-quickstart` run the teacher forward (`torch.no_grad`) on every
  batch instead; nothing else differs. Epoch time: median of epochs 2 .. E.
`cached_vs_live_speedup` = live / cached epoch time (plain pair, the ~10x teacher);
`raytrain_ds_vs_plain_time` = raytrain / plain-cached epoch time.

Text (`raytrain-text`, `plain-cached-text`): the same pair on the text pipeline's student
(jobs/configs/text.yaml: a BERT 128 wide, 2 layers, 4.3M parameters, on 64 token ids per row),
whose compute per row is large enough for the per-step costs to amortize. Rows: the reference
task's labelled docstrings (`distillery.data.docstrings`) and `TEXT_TRANSFER_ROWS` of its
transfer set, tokenized by the all-MiniLM-L6-v2 tokenizer (the `text` extra), the logits of a
small random teacher (only the student is timed). `raytrain_ds_vs_plain_time_text` = raytrain-text
/ plain-cached-text epoch time.

Epochs: 4, for 2 steady Ray Train epochs per repetition (the first pays the warm-up, the last
its checkpoint) and 3 of each plain loop, a run's epoch time the median of those and each ratio a
median over the repetitions. A Ray Train run pays its start-up whatever its epochs, and the
repetitions give the spread; more epochs per run would lengthen `make bench` (4 runs, the
profile's included) for little.

Profile: one more Ray Train run, not timed and before the timed ones (it takes the slow start a
process's first Ray Train run may pay), with py-spy (when it is installed: the `bench` extra
that `make bench` installs has it; without it there is no such run, and no warm-up) attached
to both training workers for the steady epochs, idle samples included (so shares are of wall
time); the samples inside `train_loop_per_worker` are ranked by the loop line
they are under and by leaf function.

`--smoke`: seconds, for the test (tiny data, 3 epochs, one repetition, no profile, BENCHMARKS.md
untouched).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import ray
import ray.train
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import ROOT, update_section  # noqa: E402
from measure import cell, save, summarize, verdict  # noqa: E402
from workload import flops_per_row, install_teacher  # noqa: E402

from distillery.config import DistillSpec, load_spec, parse_model_spec  # noqa: E402
from distillery.data.splits import fixed_list_to_numpy  # noqa: E402
from distillery.losses import weighted_sum  # noqa: E402
from distillery.models import build_model, count_params, load_model  # noqa: E402
from distillery.runtime import ensure_ray  # noqa: E402
from distillery.stages import Pipeline  # noqa: E402
from distillery.store_layout import cache_dir  # noqa: E402
from distillery.strategies import build_strategy  # noqa: E402
from distillery.train import lr_factor  # noqa: E402

SPEC = ROOT / "jobs/configs/mnist1d.yaml"
# ~10x the quickstart student's forward FLOPs per row (27.7k): the issue's live teacher.
TEACHER_10X = {"arch": "cnn1d", "channels": [32, 32, 32], "hidden": 128}
SMOKE = ["data.num_samples=1000", "data.transfer.num_samples=2000"]
TARGETS = {"cached_vs_live_speedup": 1.5, "raytrain_ds_vs_plain_time": 1.3,
           "raytrain_ds_vs_plain_time_text": 1.3}
VARIANTS = ("raytrain", "plain-cached", "plain-live", "plain-live-quickstart", "raytrain-text",
            "plain-cached-text")
TEXT_SPEC = ROOT / "jobs/configs/text.yaml"
TEXT_TRANSFER_ROWS = 3000
# only its logits are read: a small teacher keeps the cache quick to build
TEXT_TEACHER = ("{arch: hf, config: {model_type: bert, hidden_size: 32, num_hidden_layers: 1, "
                "num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 64}}")
METRICS = ("epoch_s", "rows_per_s", "startup_s", "in_worker_epoch_s")


class EpochClock(ray.train.UserCallback):
    """Appends each epoch report's wall time to a JSON-lines file. Callbacks run in the Train
    controller, another process, so the file is how the times come back."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": time.time(), "epoch": metrics[0]["epoch"],
                                "epoch_seconds": metrics[0]["epoch_seconds"]}) + "\n")


def raytrain_run(pipeline: Pipeline, clock: Path, rows: int) -> dict:
    started = time.time()
    pipeline.distill(callbacks=[EpochClock(str(clock))])
    reports = [json.loads(line) for line in clock.read_text().splitlines()]
    times = [r["time"] for r in reports]
    # intervals ending at epochs 2 .. E-1: each is one whole epoch plus its report
    intervals = np.diff(times[:-1]).tolist()
    epoch_s = statistics.median(intervals)
    return {"epoch_s": epoch_s, "rows_per_s": rows / epoch_s, "epochs": intervals,
            "startup_s": times[0] - reports[0]["epoch_seconds"] - started,
            "in_worker_epoch_s": statistics.median(r["epoch_seconds"] for r in reports[1:-1]),
            "total_s": time.time() - started}


def profiled_run(pipeline: Pipeline, clock: Path, out_dir: Path) -> dict | None:
    """A Ray Train run with py-spy attached to each training worker from the first epoch's
    report to the last-but-one's (steady epochs only); None without py-spy."""
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        return None
    epochs = pipeline.spec.distill.epochs

    def sample():
        if not wait_for_reports(clock, 1):
            return
        samplers = [subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--nonblocking", "--idle", "--rate", "100",
             "--format", "raw", "--output", str(out_dir / f"worker-{pid}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in train_workers()]
        wait_for_reports(clock, epochs - 1)
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            sampler.wait(timeout=60)

    sampling = threading.Thread(target=sample, daemon=True)
    sampling.start()
    pipeline.distill(callbacks=[EpochClock(str(clock))])
    sampling.join(timeout=120)
    lines = [line for f in sorted(out_dir.glob("worker-*.txt"))
             for line in f.read_text().splitlines()]
    return loop_profile(lines)


def wait_for_reports(clock: Path, count: int, timeout: float = 600) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if clock.exists() and len(clock.read_text().splitlines()) >= count:
            return True
        time.sleep(0.1)
    return False


def train_workers() -> list[int]:
    """Pids of this process's Ray Train workers (Ray retitles a worker after its actor)."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:  # a worker process that exited while we looked
            pass
    return pids


def loop_profile(lines: list[str], n: int = 8) -> dict:
    """py-spy raw stacks ("frame;frame;... count", outermost first) inside
    `train_loop_per_worker` (only the training workers run it; py-spy names a process by its
    command line when first seen, before Ray retitles it): sample shares by the loop line they
    are under and by leaf function (any line of it). Sampled with --idle, a share is of wall
    time, waits for the other worker included."""
    by_line, by_leaf, total = Counter(), Counter(), 0
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        loop = [i for i, f in enumerate(frames) if f.startswith("train_loop_per_worker (")]
        if not loop:
            continue
        total += int(count)
        by_line[frames[loop[-1]]] += int(count)
        by_leaf[re.sub(r":\d+\)$", ")", frames[-1])] += int(count)
    return {"samples": total,
            "by_loop_line": [{"frame": f, "share": c / total} for f, c in by_line.most_common(n)],
            "by_leaf": [{"frame": f, "share": c / total} for f, c in by_leaf.most_common(n)]}


def plain_run(data: dict, val: tuple, spec: DistillSpec, student_spec, params: dict,
              teacher: torch.nn.Module | None) -> dict:
    """The loop a user would write around the same model, loss and optimizer."""
    x_all, labels, cached = data["x"], data["label"], data["logits"]
    n, batch = len(x_all), spec.batch_size
    torch.manual_seed(spec.seed)
    student = build_model(student_spec, x_all.shape[1], cached.shape[1])
    strategy = build_strategy("response", **params)
    optimizer = torch.optim.AdamW(student.parameters(), lr=spec.lr,
                                  weight_decay=spec.weight_decay)
    total = -(-n // batch) * spec.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, spec.schedule))
    epochs = []
    for _ in range(spec.epochs):
        started = time.perf_counter()
        student.train()
        running = 0.0
        for idx in torch.randperm(n).split(batch):
            x = x_all[idx]
            if teacher is None:
                logits = cached[idx]
            else:
                with torch.no_grad():
                    logits = teacher(x)
            tensors = {"x": x, "label": labels[idx], "weight": torch.ones(len(idx)),
                       "logits": logits}
            loss = weighted_sum(strategy.loss_terms(student(x), tensors), strategy.weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        student.eval()
        with torch.no_grad():
            (student(val[0]).argmax(dim=-1) == val[1]).float().mean().item()
        epochs.append(time.perf_counter() - started)
    epoch_s = statistics.median(epochs[1:])
    return {"epoch_s": epoch_s, "rows_per_s": n / epoch_s, "epochs": epochs}


def text_pipeline(folder: Path, epochs: int, smoke: bool) -> Pipeline:
    """The text spec on the reference task's rows under `folder` (a spread sample of them with
    `smoke`), its cache built from TEXT_TEACHER with random weights."""
    import all_minilm_l6_v2

    from distillery.data import docstrings

    labelled = docstrings.labelled_rows()
    if smoke:  # every package: spread samples, not the first rows (one package's); other
        # labelled texts as the transfer set (reading the third-party packages takes ~50 s)
        step = labelled.num_rows // 300
        transfer = labelled.take(np.arange(1, labelled.num_rows, step * 3)).select(["text"])
        labelled = labelled.take(np.arange(0, labelled.num_rows, step))
    else:
        transfer = docstrings.transfer_rows(TEXT_TRANSFER_ROWS)
    pq.write_table(labelled, folder / "docstrings.parquet")
    pq.write_table(transfer, folder / "transfer.parquet")
    tokenizer = all_minilm_l6_v2.extract_model(str(folder))
    spec = load_spec(TEXT_SPEC, [f"store={folder}/store",
                                 f"data.path={folder}/docstrings.parquet",
                                 f"data.transfer.path={folder}/transfer.parquet",
                                 f"data.tokenizer={tokenizer}", f"teacher.model={TEXT_TEACHER}",
                                 f"distill.epochs={epochs}", f"distill.checkpoint_every={epochs}"])
    pipeline = Pipeline(spec)
    install_teacher(pipeline.store, spec.teacher.name, spec.teacher.model,
                    num_features=pipeline.splits.num_features,
                    num_classes=pipeline.splits.num_classes)
    return pipeline


def read_rows(pipeline: Pipeline, key: str) -> dict:
    files = sorted(Path(pipeline.store.fs_path(*cache_dir(key))).glob("*.parquet"))
    table = pq.ParquetDataset(files).read()
    return {"x": torch.tensor(fixed_list_to_numpy(table["x"])),
            "label": torch.tensor(table["label"].fill_null(-1).to_numpy()),
            "logits": torch.tensor(fixed_list_to_numpy(table["logits"]))}


def ratios(summary: dict) -> dict:
    def median(variant: str) -> float:
        return summary[variant]["epoch_s"]["median"]

    return {"cached_vs_live_speedup": median("plain-live") / median("plain-cached"),
            "cached_vs_live_speedup_quickstart_teacher":
                median("plain-live-quickstart") / median("plain-cached"),
            "raytrain_ds_vs_plain_time": median("raytrain") / median("plain-cached"),
            "raytrain_ds_vs_plain_time_text": median("raytrain-text")
            / median("plain-cached-text")}


LABELS = {"raytrain": "Ray Train + DeepSpeed, 2 workers, cached logits",
          "plain-cached": "plain loop, cached logits",
          "plain-live": "plain loop, ~10x teacher live",
          "plain-live-quickstart": "plain loop, quickstart teacher live",
          "raytrain-text": "text student: Ray Train + DeepSpeed, 2 workers, cached logits",
          "plain-cached-text": "text student: plain loop, cached logits"}


def format_markdown(result: dict) -> str:
    inputs, summary, r = result["inputs"], result["summary"], result["ratios"]
    m = inputs["models"]
    lines = [
        f"{inputs['rows']:,} rows per epoch (the quickstart's distillation rows), global batch "
        f"{inputs['batch_size']}, response KD; student {m['student']['params']:,} params "
        f"({m['student']['flops_per_row'] / 1e3:.1f} kFLOP/row forward); live teachers: ~10x "
        f"{m['teacher_10x']['params']:,} params "
        f"({m['teacher_10x']['flops_per_row'] / m['student']['flops_per_row']:.1f}x the "
        f"student's FLOPs), quickstart {m['quickstart']['params']:,} params "
        f"({m['quickstart']['flops_per_row'] / m['student']['flops_per_row']:.1f}x). "
        f"{result['machine']['cpus']} CPUs; plain loop on {inputs['plain_threads']} threads. "
        f"Median (min-max) of {inputs['repetitions']} repetitions of {inputs['epochs']} epochs "
        "(steady state: warm-up and checkpointing epochs left out).", "",
        "| variant | epoch s | rows/s | start-up s |", "|---|---:|---:|---:|"]
    for variant in VARIANTS:
        s = summary[variant]
        start = s.get("startup_s")
        lines.append(f"| {LABELS[variant]} | {cell(s['epoch_s'], 2)} | "
                     f"{s['rows_per_s']['median']:,.0f} | "
                     f"{cell(start, 1) if start else '-'} |")
    speedup = verdict(r["cached_vs_live_speedup"], TARGETS["cached_vs_live_speedup"])
    overhead = verdict(r["raytrain_ds_vs_plain_time"], TARGETS["raytrain_ds_vs_plain_time"],
                       at_least=False)
    text = inputs["text"]
    text_overhead = verdict(r["raytrain_ds_vs_plain_time_text"],
                            TARGETS["raytrain_ds_vs_plain_time_text"], at_least=False)
    lines += ["", f"- `cached_vs_live_speedup` (plain loop, ~10x teacher): {speedup}; with the "
              f"quickstart teacher live: {r['cached_vs_live_speedup_quickstart_teacher']:.2f}.",
              f"- `raytrain_ds_vs_plain_time`: {overhead}; Ray Train's in-worker epoch (its own "
              "`epoch_seconds`) is "
              f"{summary['raytrain']['in_worker_epoch_s']['median']:.2f} s.",
              f"- `raytrain_ds_vs_plain_time_text`: {text_overhead} (`{text['spec']}`'s student, "
              f"{text['student']['params']:,} params, "
              f"{text['student']['flops_per_row'] / 1e6:.1f} MFLOP/row forward; "
              f"{text['rows']:,} rows of {text['max_length']} token ids, global batch "
              f"{text['batch_size']})."]
    if r["raytrain_ds_vs_plain_time"] > TARGETS["raytrain_ds_vs_plain_time"]:
        lines += ["", *raytrain_explanation(result)]
    if r["cached_vs_live_speedup"] < TARGETS["cached_vs_live_speedup"]:
        lines += ["", live_explanation(result)]
    return "\n".join(lines)


def live_explanation(result: dict) -> str:
    """Why a teacher of ~10x the FLOPs costs less than ~10x the time: the rates both run at."""
    summary, inputs = result["summary"], result["inputs"]
    m, rows = inputs["models"], inputs["rows"]
    cached = summary["plain-cached"]["epoch_s"]["median"]
    extra = summary["plain-live"]["epoch_s"]["median"] - cached
    student_rate = rows * m["student"]["train_flops_per_row"] / cached / 1e9
    teacher_rate = rows * m["teacher_10x"]["flops_per_row"] / extra / 1e9
    flops_x = m["teacher_10x"]["flops_per_row"] / m["student"]["flops_per_row"]
    quickstart_x = result["ratios"]["cached_vs_live_speedup_quickstart_teacher"]
    return (f"Why it is missed: FLOPs are not time at this size. The student's training step "
            f"runs at {student_rate:.1f} GFLOP/s (tiny convolutions: Python dispatch, autograd "
            f"and AdamW per step dominate), the live teacher's batched forward at "
            f"{teacher_rate:.0f} GFLOP/s, so {flops_x:.1f}x "
            f"the student's forward FLOPs adds {extra:.2f} s to a {cached:.2f} s epoch. The "
            f"cache pays in proportion to the teacher's time, not its FLOPs: with the quickstart "
            f"teacher live the epoch takes {quickstart_x:.2f}x "
            "as long. What would close it for a ~10x teacher: a student step that runs nearer "
            "its FLOPs (larger batches, a compiled step), which makes the teacher's share grow.")


def raytrain_explanation(result: dict) -> list[str]:
    summary, inputs, profile = result["summary"], result["inputs"], result.get("profile")
    steps = -(-inputs["rows"] // inputs["num_workers"] // (inputs["batch_size"]
                                                          // inputs["num_workers"]))
    per_step = summary["raytrain"]["in_worker_epoch_s"]["median"] / steps * 1e3
    plain_step = summary["plain-cached"]["epoch_s"]["median"] / -(-inputs["rows"]
                                                                  // inputs["batch_size"]) * 1e3
    lines = [f"Why it is missed: per-step costs that a model this small cannot hide. Each worker "
             f"takes {steps} steps of {inputs['batch_size'] // inputs['num_workers']} rows per "
             f"epoch at {per_step:.1f} ms a step, where the plain loop takes a "
             f"{inputs['batch_size']}-row step in {plain_step:.1f} ms."]
    if profile:
        by_line = ", ".join(f"`{_statement(e['frame'])}` {e['share']:.0%}"
                            for e in profile["by_loop_line"][:5])
        by_leaf = ", ".join(f"`{e['frame'].split(' (')[0]}` {e['share']:.0%}"
                            for e in profile["by_leaf"][:6])
        lines[0] += (f" py-spy on the training workers ({profile['samples']} samples inside "
                     f"`train_loop_per_worker`), by loop statement: {by_line}; by leaf: "
                     f"{by_leaf}.")
    else:
        lines[0] += " (py-spy is not installed here, so there is no profile in this run.)"
    lines += ["", "Every step all-reduces the gradients between the two workers, and DeepSpeed "
              "0.19 adds a second all-reduce for the gradient norm (its `gradient_clipping` "
              "defaults to 1.0; the spec has no field for it): on 2 cores both processes must be "
              "scheduled together twice a step. Each worker reads its shard from the object store, "
              "materialized once for the run (`train.worker_datasets`: streamed through Ray "
              "Data's split coordinator every epoch, as until 2026-11-30, the epoch took twice "
              "as long), through Ray Data's iterator with a local shuffle buffer, a thread that "
              "competes for the same cores. What would close it: fewer, larger steps per worker "
              "(a larger batch), or one worker using every core for a model this small on one "
              "machine; on machines with more cores per worker, compute per step grows while the "
              "per-step costs stay."]
    return lines


def _statement(frame: str) -> str:
    """`train_loop_per_worker (distillery/train.py:181)` -> that line of train.py, stripped."""
    line = int(frame.rsplit(":", 1)[1].rstrip(")"))
    source = ROOT / "platform/distillery/train.py"
    return source.read_text().splitlines()[line - 1].strip()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--output", default=None, help="default: bench/results/distill_epoch.json "
                        "(bench/results/smoke/ with --smoke)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.repetitions = 3, 1
    ensure_ray()
    # The Train controller unpickles EpochClock: by value, as it cannot import this file.
    ray.cloudpickle.register_pickle_by_value(sys.modules[EpochClock.__module__])
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-distill-epoch-") as tmp:
        quickstart = load_spec(SPEC, [])
        spec = load_spec(SPEC, [*(SMOKE if args.smoke else []), f"store={tmp}",
                                f"teacher.model={json.dumps(TEACHER_10X)}",
                                f"distill.epochs={args.epochs}",
                                # only the last epoch checkpoints (it always does)
                                f"distill.checkpoint_every={args.epochs}"])
        pipeline = Pipeline(spec)
        parts = install_teacher(pipeline.store, spec.teacher.name, spec.teacher.model)
        manifest = pipeline.teacher_infer()
        data = read_rows(pipeline, manifest["key"])
        splits = pipeline.splits
        val = (torch.tensor(splits.x_val), torch.tensor(splits.y_val))
        teachers = {"plain-cached": None, "plain-live": load_model(pipeline.store, parts)[0],
                    "plain-live-quickstart": build_model(quickstart.teacher.model, 40, 10).eval()}
        d = spec.distill
        params = {"temperature": d.temperature, "alpha": d.alpha, "kl": d.kl}
        rows = len(data["x"])
        # first: the process's first Ray Train run may start far more slowly than the later
        # ones, and this one is not timed
        profile = None if args.smoke else profiled_run(
            pipeline, Path(tmp) / "clock-profile.jsonl", Path(tmp))
        for rep in range(args.repetitions):
            clock = Path(tmp) / f"clock-{rep}.jsonl"
            runs.append({"variant": "raytrain", "repetition": rep,
                         **raytrain_run(pipeline, clock, rows)})
            for variant, teacher in teachers.items():
                runs.append({"variant": variant, "repetition": rep,
                             **plain_run(data, val, spec.distill, spec.student.model, params,
                                         teacher)})
            print(f"[{rep}] " + ", ".join(f"{r['variant']} {r['epoch_s']:.2f} s"
                                          for r in runs[-4:]), flush=True)
        text_dir = Path(tmp) / "text"
        text_dir.mkdir()
        text = text_pipeline(text_dir, args.epochs, args.smoke)
        text_data = read_rows(text, text.teacher_infer()["key"])
        text_val = (torch.tensor(text.splits.x_val), torch.tensor(text.splits.y_val))
        t = text.spec.distill
        text_params = {"temperature": t.temperature, "alpha": t.alpha, "kl": t.kl}
        text_rows = len(text_data["x"])
        for rep in range(args.repetitions):
            runs.append({"variant": "raytrain-text", "repetition": rep, **raytrain_run(
                text, Path(tmp) / f"clock-text-{rep}.jsonl", text_rows)})
            runs.append({"variant": "plain-cached-text", "repetition": rep,
                         **plain_run(text_data, text_val, t, text.spec.student.model,
                                     text_params, None)})
            print(f"[{rep}] text: " + ", ".join(f"{r['variant']} {r['epoch_s']:.2f} s"
                                                for r in runs[-2:]), flush=True)
        text_student = build_model(text.spec.student.model, text.splits.num_features,
                                   text.splits.num_classes)
        text_inputs = {"spec": str(TEXT_SPEC.relative_to(ROOT)), "rows": text_rows,
                       "batch_size": t.batch_size, "max_length": text.splits.num_features,
                       "student": {"model": text.spec.student.model.model_dump(),
                                   "params": count_params(text_student),
                                   "flops_per_row": flops_per_row(
                                       text_student.eval(),
                                       num_features=text.splits.num_features)}}
    student = build_model(spec.student.model, 40, 10)
    models = {"student": student, "teacher_10x": teachers["plain-live"],
              "quickstart": teachers["plain-live-quickstart"]}
    inputs = {
        "rows": rows, "epochs": args.epochs, "repetitions": args.repetitions,
        "batch_size": spec.distill.batch_size, "num_workers": spec.distill.num_workers,
        "plain_threads": torch.get_num_threads(), "smoke": args.smoke,
        "models": {name: {"model": arch.model_dump() if hasattr(arch, "model_dump") else arch,
                          "params": count_params(models[name]),
                          "flops_per_row": flops_per_row(models[name]),
                          "train_flops_per_row": flops_per_row(models[name], train=True)}
                   for name, arch in (("student", spec.student.model),
                                      ("teacher_10x", parse_model_spec(TEACHER_10X)),
                                      ("quickstart", quickstart.teacher.model))},
        "text": text_inputs}
    summary = summarize(runs, ("variant",), METRICS)
    result = save("distill_epoch", inputs, runs, summary, ratios(summary), args.output,
                  targets={k: (">= " if k.startswith("cached") else "<= ") + str(v)
                           for k, v in TARGETS.items()}, profile=profile)
    markdown = format_markdown(result)
    if not args.smoke:
        update_section("distill_epoch", "## Distillation epoch (`bench/distill_epoch.py`)\n\n"
                       + markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    main()
