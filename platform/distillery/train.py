"""Ray Train TorchTrainer + DeepSpeed: one training loop for teacher, student and baseline.

The driver builds a `TrainJob` (plain data) and the datasets; each worker reads only its
`config`, wraps the model in a DeepSpeed engine, materializes its shard of the Ray Dataset once
(`worker_datasets`), sums the strategy's weighted loss terms, and reports metrics plus a
checkpoint every epoch. Re-running with the same run directory resumes from the latest
checkpoint (Ray Train restores it).

The engine, resume, per-epoch report and trainer pieces are public: lm/train.py's loop for
causal LMs is built from them too.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from distillery.config import TrainSpec, parse_model_spec
from distillery.data.splits import fixed_list_to_numpy
from distillery.losses import weighted_sum
from distillery.models import build_model
from distillery.runtime import train_log_level
from distillery.storage import filesystem, read_location
from distillery.strategies import build_strategy
from distillery.strategies.curriculum import curriculum_weight

CHECKPOINT_TAG = "deepspeed"
WEIGHTS_FILE = "model.pt"


@dataclass
class TrainJob:
    """Everything a worker needs; it travels as the TorchTrainer's train_loop_config."""

    model: dict  # ModelSpec as a dict
    train: dict  # TrainSpec as a dict
    num_features: int
    num_classes: int
    rows: int  # training rows per epoch, for the LR schedule
    strategy: str = "supervised"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # for log lines: "teacher", "student", "baseline"
    curriculum: dict | None = None  # {"score": ..., "thresholds": [one per epoch]}
    init_weights: str | None = None  # URI of a state_dict to start from (pre-trained weights)


def lr_factor(step: int, total: int, schedule: str) -> float:
    """Multiplier of the peak LR at `step` of `total` (clamped at the end).

    onecycle: linear warm-up from 1/25 over the first 30%, then cosine down to ~0
    (Smith & Topin 2018, as torch's OneCycleLR); cosine: cosine from 1 to 0; constant: 1.
    """
    progress = min(step, total) / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    warm = 0.3
    if progress < warm:
        return 1 / 25 + (1 - 1 / 25) * progress / warm
    return 0.5 * (1.0 + math.cos(math.pi * (progress - warm) / (1 - warm)))


def deepspeed_config(spec: TrainSpec, world_size: int, on_gpu: bool) -> dict:
    bf16 = spec.precision == "bf16" or (
        spec.precision == "auto" and on_gpu and torch.cuda.is_bf16_supported()
    )
    micro = max(1, spec.batch_size // world_size)
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro * world_size,
        "zero_optimization": {"stage": spec.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,  # we log per epoch ourselves
        "zero_allow_untested_optimizer": True,  # our AdamW is plain torch.optim
    }


def batch_to_tensors(batch, device, dtype, needs: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """pyarrow batch -> tensors; null labels (unlabeled transfer rows) become -1, and every
    row gets weight 1 (a curriculum changes that)."""
    x = torch.tensor(fixed_list_to_numpy(batch["x"]), device=device)
    if x.is_floating_point():  # features; token ids stay integers
        x = x.to(dtype)
    out = {
        "x": x,
        "label": torch.tensor(batch["label"].fill_null(-1).to_numpy(zero_copy_only=False),
                              device=device, dtype=torch.int64),
        "weight": torch.ones(len(x), device=device),
    }
    for name in needs:
        out[name] = torch.tensor(fixed_list_to_numpy(batch[name]), device=device)
    return out


def full_state_dict(engine, zero_stage: int) -> dict[str, torch.Tensor]:
    """Unpartitioned weights as fp32 tensors (bf16-trained values upcast); under ZeRO-3 every
    rank must take part in the gather."""
    import deepspeed

    def copy():
        return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
                for k, v in engine.module.state_dict().items()}

    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()),
                                               modifier_rank=None):
            return copy()
    return copy()


def allreduce(values: list[float], device) -> list[float]:
    """Elementwise sum of `values` over all ranks (float64, so counts stay exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def start_engine(model: torch.nn.Module, spec: TrainSpec, rows: int, world: int, device):
    """(engine, scheduler, micro batch, float input dtype): `model` in a DeepSpeed engine with
    AdamW, stepped per batch through lr_factor over spec.epochs epochs of `rows` rows that
    `world` workers share."""
    import deepspeed

    ds_config = deepspeed_config(spec, world, device.type == "cuda")
    micro = ds_config["train_micro_batch_size_per_gpu"]
    steps_per_epoch = math.ceil((rows // world) / micro)
    total_steps = steps_per_epoch * spec.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, spec.schedule))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=scheduler, config=ds_config)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
    return engine, scheduler, micro, dtype


def resume_epoch(engine, rank: int, label: str) -> int:
    """The first epoch to train: 0, or the one after the checkpoint that Ray Train restored
    (a rerun in the same run directory, or a retry after a worker failure), whose DeepSpeed
    state (weights, optimizer, scheduler) is loaded into `engine`."""
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return 0
    with checkpoint.as_directory() as ckpt_dir:
        _, client_state = engine.load_checkpoint(ckpt_dir, tag=CHECKPOINT_TAG)
    if rank == 0:
        print(f"[{label}] resumed from epoch {client_state['epoch'] + 1}", flush=True)
    return client_state["epoch"] + 1


def report_epoch(engine, metrics: dict, epoch: int, spec: TrainSpec, rank: int,
                 export: Callable[[], Any]) -> None:
    """ray.train.report(metrics) for 0-based `epoch`, with a checkpoint every
    spec.checkpoint_every epochs and at the last: the DeepSpeed state (to resume from) and
    WEIGHTS_FILE, what `export()` returns. Every rank calls it (and `export`, which may gather
    ZeRO-3 partitions)."""
    last = epoch + 1 == spec.epochs
    if (epoch + 1) % spec.checkpoint_every and not last:
        ray.train.report(metrics)
        return
    weights = export()
    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag=CHECKPOINT_TAG, client_state={"epoch": epoch})
        if rank == 0:
            torch.save(weights, os.path.join(tmp, WEIGHTS_FILE))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"epoch-{epoch + 1:04d}")


AUTO_MATERIALIZE_SHARE = 0.25
"""`ingest: auto` materializes rows estimated at most this share of the cluster's object store:
the rest stays for the blocks that stages and trainers make meanwhile, as spilling the rows to
disk would cost more than streaming them."""


def ingest_rows(ds: ray.data.Dataset, spec: TrainSpec,
                num_rows: int) -> tuple[ray.data.Dataset, TrainSpec]:
    """The training rows as the trainer takes them by `spec.ingest`: materialized here, before
    the trainer takes its CPUs (so reading never waits on them), or left lazy to stream; and
    the spec with `auto` resolved to the one chosen, for the workers."""
    mode = spec.ingest
    if mode == "auto":
        store = ray.cluster_resources().get("object_store_memory", 0)
        mode = choose_ingest(num_rows * row_bytes(ds.schema().types), store)
    ds = ds.materialize() if mode == "materialize" else ds
    return ds, spec.model_copy(update={"ingest": mode})


def choose_ingest(rows_bytes: float, object_store_bytes: float) -> str:
    return "materialize" if rows_bytes <= AUTO_MATERIALIZE_SHARE * object_store_bytes else "stream"


def row_bytes(types: list[pa.DataType]) -> int:
    """A row's size in memory, estimated from its column types: fixed-size lists of fixed-width
    values exactly, anything of variable width at 16 bytes a value."""
    total = 0
    for t in types:
        width = 1
        while pa.types.is_fixed_size_list(t):
            width, t = width * t.list_size, t.value_type
        fixed = pa.types.is_integer(t) or pa.types.is_floating(t)
        total += width * (t.bit_width // 8 if fixed else 16)
    return total


def worker_datasets(ingest: str):
    """This worker's `train` shard and the whole `val` set. With `ingest` "materialize" (the
    default) the shard is pulled into the object store once for all epochs: streamed anew each
    epoch, every block would go through Ray Data's split coordinator actor, and the workers
    would wait on it every epoch (bench/distill_epoch.py; BENCHMARKS.md, Distillation epoch),
    where the one pass that materializes is paid before the first epoch. With "stream" the
    shard is the streaming split's iterator, read anew each epoch, so it never has to fit.
    Either way each worker shuffles its rows locally each epoch; `val` is small and is
    materialized."""
    train = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val").materialize()
    return (train.materialize() if ingest == "materialize" else train), val


def train_loop_per_worker(config: dict) -> None:
    job = TrainJob(**config)
    spec = TrainSpec.model_validate(job.train)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    torch.manual_seed(spec.seed)  # identical init on every rank
    student = build_model(parse_model_spec(job.model), job.num_features, job.num_classes)
    if job.init_weights:
        student.load_state_dict(torch.load(io.BytesIO(read_location(job.init_weights)),
                                           weights_only=True))
    strategy = build_strategy(job.strategy, **job.strategy_params)
    model = strategy.wrap(student)
    engine, scheduler, micro, dtype = start_engine(model, spec, job.rows, world, device)
    start_epoch = resume_epoch(engine, rank, job.label)

    train_shard, val_shard = worker_datasets(spec.ingest)
    # the same names on every rank: they are the layout of the all-reduce below
    names = ["loss", *sorted(strategy.weights)]
    num_models = strategy.num_models
    epoch_seconds = []
    for epoch in range(start_epoch, spec.epochs):
        started = time.perf_counter()
        engine.train()
        sums = dict.fromkeys(names, 0.0)
        batches = rows = 0
        for batch in train_shard.iter_batches(
            batch_size=micro, batch_format="pyarrow", local_shuffle_buffer_size=16 * micro,
            local_shuffle_seed=spec.seed * 100_003 + epoch * world + rank,
        ):
            tensors = batch_to_tensors(batch, device, dtype, strategy.needs)
            if job.curriculum:
                tensors["weight"] = curriculum_weight(
                    tensors["logits"], tensors["label"], job.curriculum["score"],
                    job.curriculum["thresholds"][epoch])
            terms = strategy.loss_terms(engine(tensors["x"]), tensors)
            loss = weighted_sum(terms, strategy.weights)
            engine.backward(loss)
            engine.step()
            for name, value in {"loss": loss, **terms}.items():
                sums[name] += value.item()
            batches += 1
            rows += len(tensors["x"])

        # Every rank scores the whole (small, unsplit) validation set: no split barrier, and
        # ZeRO-3 needs all ranks in each forward anyway.
        engine.eval()
        correct, seen = [0] * num_models, 0
        with torch.no_grad():
            for batch in val_shard.iter_batches(batch_size=4096, batch_format="pyarrow"):
                tensors = batch_to_tensors(batch, device, dtype, ())
                for i, logits in enumerate(strategy.predictions(engine(tensors["x"]))):
                    correct[i] += (logits.argmax(dim=-1) == tensors["label"]).sum().item()
                seen += len(tensors["x"])

        totals = allreduce([sums[n] for n in names] + [batches, rows], device)
        batches_all, rows_all = totals[len(names):]
        seconds = time.perf_counter() - started
        epoch_seconds.append(seconds)
        metrics = {f"train_{n}": totals[i] / max(batches_all, 1) for i, n in enumerate(names)}
        if num_models > 1:  # online peers: each one's; val_accuracy stays the student's
            metrics.update({f"val_accuracy_{i}": c / seen for i, c in enumerate(correct)})
        metrics.update(
            epoch=epoch + 1,
            val_accuracy=correct[0] / seen,
            lr=scheduler.get_last_lr()[0],
            rows_per_second=rows_all / seconds,
            epoch_seconds=seconds,
        )
        report_epoch(engine, metrics, epoch, spec, rank,
                     lambda: strategy.export(full_state_dict(engine, spec.zero_stage)))
        if rank == 0 and shows_epoch(epoch, spec.epochs):
            terms_text = " ".join(f"{n}={metrics[f'train_{n}']:.4f}" for n in names)
            print(f"[{job.label}] epoch {epoch + 1}/{spec.epochs} {terms_text} "
                  f"val_acc={metrics['val_accuracy']:.4f} "
                  f"({seconds:.1f}s, {metrics['rows_per_second']:.0f} rows/s, "
                  f"{eta(epoch_seconds, spec.epochs - epoch - 1)})", flush=True)


def shows_epoch(epoch: int, epochs: int, lines: int = 20) -> bool:
    """Whether the console gets the line of 0-based `epoch`: every epoch of a run of up to
    `lines` epochs; of a longer one the first, every ceil(epochs / lines)-th and the last, so
    that a stage fits one screen (each epoch is still reported to Ray Train)."""
    every = math.ceil(epochs / lines)
    return epoch == 0 or (epoch + 1) % every == 0 or epoch + 1 == epochs


def eta(epoch_seconds: list[float], remaining: int) -> str:
    """`ETA 1m05s`: `remaining` epochs x the mean of this run's `epoch_seconds` so far (the
    first epoch's setup included, so early estimates run high); `done` after the last."""
    if remaining == 0:
        return "done"
    left = round(remaining * sum(epoch_seconds) / len(epoch_seconds))
    return f"ETA {left // 60}m{left % 60:02d}s"


def fit(job: TrainJob, datasets: dict[str, ray.data.Dataset], run_dir: str,
        callbacks: list | None = None) -> ray.train.Result:
    """Train with checkpoints in `run_dir`/checkpoints (local path or URI); a run that already
    has checkpoints there is resumed from the latest. `callbacks` go to the RunConfig (Ray
    Tune's TuneReportCallback, when a Tune trial runs this)."""
    return run_trainer(train_loop_per_worker, asdict(job), TrainSpec.model_validate(job.train),
                       datasets, run_dir, callbacks)


def run_trainer(loop: Callable[[dict], None], config: dict, spec: TrainSpec,
                datasets: dict[str, ray.data.Dataset], run_dir: str,
                callbacks: list | None = None) -> ray.train.Result:
    """TorchTrainer(loop, config) on spec.num_workers workers, `train` split across them and
    the other datasets whole on each; checkpoints in `run_dir`/checkpoints, resumed from the
    latest when there are any."""
    use_gpu = spec.use_gpu if isinstance(spec.use_gpu, bool) else (
        ray.cluster_resources().get("GPU", 0) >= spec.num_workers)
    for ds in datasets.values():
        # Per-epoch log lines say more than progress bars of the ingest. Without Ray's tqdm, a
        # worker (no terminal) logs Ray Data's progress at INFO instead, to ray-data.log (and to
        # the console with -v); disabling the bars would print a warning in each worker.
        ds.context.use_ray_tqdm = False
        ds.context.print_on_execution_start = False
    fs, path = filesystem(run_dir)
    level = train_log_level()

    def worker_loop(config: dict) -> None:
        console_level(level)
        if not torch.cuda.is_available():
            # named, DeepSpeed's accelerator is not auto-detected, which warns on every worker
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        loop(config)

    trainer = TorchTrainer(
        worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": spec.cpus_per_worker,
                                                           **spec.resources}),
        run_config=RunConfig(
            name="checkpoints", storage_path=path, storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level=level),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return trainer.fit()


def console_level(level: str) -> None:
    """Set this Train worker's console handler to `level`. RunConfig's LoggingConfig governs
    the loggers named ray.train*, but Ray 2.60 logs each report ("Reporting training result N:
    TrainingReport(...)") from a logger named by its file path, so through the root logger,
    whose console handler this is; Train's application log file, also on the root logger,
    keeps every record."""
    from ray._private.log import PlainRayHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PlainRayHandler):
            handler.setLevel(level)


def load_weights(result: ray.train.Result) -> list[dict[str, torch.Tensor]]:
    """The exported state dicts of the last checkpoint: the student's first, then any peers'."""
    with result.checkpoint.as_directory() as ckpt_dir:
        return torch.load(os.path.join(ckpt_dir, WEIGHTS_FILE), weights_only=True)
