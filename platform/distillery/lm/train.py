"""Ray Train TorchTrainer + DeepSpeed for Hugging Face causal LMs: a teacher trained from
scratch, a next-token-only student, and a student distilled from the teacher's top-k cache.

Built from train.py's pieces (DeepSpeed engine and LR schedule, resume, per-epoch report with
checkpoints, the trainer), so checkpoints and resume behave as for the tabular models: rerun
with the same run directory and training goes on after the latest checkpoint. A row is a packed
block of L + 1 tokens; the model reads input_ids[:, :-1] and predicts labels input_ids[:, 1:]
(text_data.shift_block). Per step:

    next_token  loss = CE(student, labels)
    token_kd    loss = alpha * token_kd_loss(student, teacher top-k, T, kl) + (1 - alpha) * CE

Packed blocks have no padding, so every position counts (the mask is all ones).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import ray
import ray.train
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from distillery.config import TrainSpec
from distillery.data.splits import fixed_list_to_numpy
from distillery.lm.artifacts import load_lm
from distillery.lm.text_data import shift_block
from distillery.lm.token_losses import next_token_loss, token_kd_loss
from distillery.lm.topk import topk_tensors
from distillery.losses import weighted_sum
from distillery.storage import Store
from distillery.train import (
    WEIGHTS_FILE,
    allreduce,
    eta,
    full_state_dict,
    report_epoch,
    resume_epoch,
    run_trainer,
    start_engine,
    worker_datasets,
)

STRATEGIES = ("next_token", "token_kd")
TOKEN_KD_PARAMS = ("alpha", "kl", "temperature")
TOPK_COLUMNS = ("topk_ids", "topk_logprobs")
# LM epochs are long: rank 0 logs the running loss this many times per epoch, besides the
# epoch line.
PROGRESS_LINES = 10


@dataclass
class LMTrainJob:
    """Everything a worker needs; it travels as the TorchTrainer's train_loop_config."""

    model: dict  # {"config": HF config dict} (fresh weights) or {"store": root, "parts": [...]}
    train: dict  # TrainSpec as a dict
    rows: int  # training blocks per epoch, for the LR schedule
    strategy: str = "next_token"  # one of STRATEGIES
    params: dict[str, Any] = field(default_factory=dict)  # token_kd: TOKEN_KD_PARAMS
    label: str = ""  # for log lines: "teacher", "student", "baseline"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"LM strategy {self.strategy!r} is unknown; valid: {STRATEGIES}")
        wanted = TOKEN_KD_PARAMS if self.strategy == "token_kd" else ()
        if sorted(self.params) != sorted(wanted):
            raise ValueError(f"strategy {self.strategy!r} takes params {list(wanted)}, "
                             f"got {sorted(self.params)}")
        if sorted(self.model) not in (["config"], ["parts", "store"]):
            raise ValueError("LM model must be {'config': <HF config dict>} or "
                             f"{{'store': <root>, 'parts': [...]}}, got keys {sorted(self.model)}")


def build_lm(model: dict) -> PreTrainedModel:
    """A causal LM with fresh weights from an HF config dict (its `model_type` picks the class),
    or the one stored at store/parts (lm.artifacts.save_lm)."""
    if "config" in model:
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**model["config"]))
    return load_lm(Store(model["store"]), tuple(model["parts"]))[0]


def block_tensors(batch: pa.Table, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels), both (B, L) int64 on `device`, from the `input_ids` column of packed
    blocks of L + 1 tokens."""
    inputs, labels = shift_block(fixed_list_to_numpy(batch["input_ids"]))
    return (torch.tensor(inputs, dtype=torch.long, device=device),
            torch.tensor(labels, dtype=torch.long, device=device))


def token_kd_terms(logits: torch.Tensor, labels: torch.Tensor, topk_ids: torch.Tensor,
                   topk_logprobs: torch.Tensor, temperature: float,
                   kl: str) -> dict[str, torch.Tensor]:
    """{"kd": token_kd_loss, "task": next_token_loss} on packed blocks, where every position
    counts. logits (B, L, V); labels (B, L); topk_ids, topk_logprobs (B, L, k)."""
    mask = torch.ones_like(labels, dtype=torch.bool)
    return {"kd": token_kd_loss(logits, topk_ids, topk_logprobs, mask, temperature, kl),
            "task": next_token_loss(logits, labels, mask)}


def lm_train_loop(config: dict) -> None:
    job = LMTrainJob(**config)
    spec = TrainSpec.model_validate(job.train)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    torch.manual_seed(spec.seed)  # identical init on every rank
    engine, scheduler, micro, _ = start_engine(build_lm(job.model), spec, job.rows, world, device)
    start_epoch = resume_epoch(engine, rank, job.label)
    kd = job.strategy == "token_kd"
    weights = {"kd": job.params["alpha"], "task": 1 - job.params["alpha"]} if kd else {}
    # the same names on every rank: they are the layout of the all-reduce below
    names = ["loss", *sorted(weights)]
    steps = math.ceil((job.rows // world) / micro)
    log_every = max(1, steps // PROGRESS_LINES)

    train_shard, val_shard = worker_datasets(spec.ingest)
    epoch_seconds = []
    for epoch in range(start_epoch, spec.epochs):
        started = time.perf_counter()
        engine.train()
        # summed on the device and read at log points only: .item() every step would stall a
        # GPU on each one
        sums = torch.zeros(len(names), dtype=torch.float64, device=device)
        logged = sums.clone()
        batches = tokens = 0
        for batch in train_shard.iter_batches(
            batch_size=micro, batch_format="pyarrow", local_shuffle_buffer_size=16 * micro,
            local_shuffle_seed=spec.seed * 100_003 + epoch * world + rank,
        ):
            inputs, labels = block_tensors(batch, device)
            logits = engine(input_ids=inputs, use_cache=False).logits  # (B, L, V)
            if kd:
                topk_ids, topk_logprobs = topk_tensors(batch.select(TOPK_COLUMNS))
                terms = token_kd_terms(logits, labels, topk_ids.to(device),
                                       topk_logprobs.to(device), job.params["temperature"],
                                       job.params["kl"])
                loss = weighted_sum(terms, weights)
            else:
                terms = {}
                loss = next_token_loss(logits, labels, torch.ones_like(labels))
            engine.backward(loss)
            engine.step()
            sums += torch.stack([loss.detach(), *(terms[n].detach() for n in names[1:])]).double()
            batches += 1
            tokens += labels.numel()
            if rank == 0 and batches % log_every == 0 and batches < steps:
                window = (sums - logged) / log_every
                logged = sums.clone()
                # every rank steps in lockstep on an equal shard: world x rank 0's tokens
                rate = tokens * world / (time.perf_counter() - started)
                print(f"[{job.label}] epoch {epoch + 1}/{spec.epochs} step {batches}/{steps} "
                      f"loss={window[0].item():.4f} lr={scheduler.get_last_lr()[0]:.2e} "
                      f"({rate:.0f} tokens/s)", flush=True)
        train_seconds = time.perf_counter() - started

        # Every rank scores the whole (small, unsplit) validation set, as train.py does: no
        # split barrier, and ZeRO-3 needs all ranks in each forward anyway.
        engine.eval()
        val_sum = torch.zeros((), dtype=torch.float64, device=device)
        val_tokens = 0
        with torch.no_grad():
            for batch in val_shard.iter_batches(batch_size=micro, batch_format="pyarrow"):
                inputs, labels = block_tensors(batch, device)
                logits = engine(input_ids=inputs, use_cache=False).logits
                val_sum += next_token_loss(logits, labels, torch.ones_like(labels)) * labels.numel()
                val_tokens += labels.numel()

        totals = allreduce([*sums.tolist(), batches, tokens], device)
        batches_all, tokens_all = totals[len(names):]
        seconds = time.perf_counter() - started
        epoch_seconds.append(seconds)
        metrics = {f"train_{n}": totals[i] / max(batches_all, 1) for i, n in enumerate(names)}
        val_loss = val_sum.item() / max(val_tokens, 1)
        metrics.update(
            epoch=epoch + 1,
            val_loss=val_loss,
            val_perplexity=math.exp(val_loss),
            lr=scheduler.get_last_lr()[0],
            tokens_per_second=tokens_all / train_seconds,  # training only, all ranks
            epoch_seconds=seconds,
        )
        report_epoch(engine, metrics, epoch, spec, rank,
                     lambda: full_state_dict(engine, spec.zero_stage))
        if rank == 0:
            terms_text = " ".join(f"{n}={metrics[f'train_{n}']:.4f}" for n in names)
            print(f"[{job.label}] epoch {epoch + 1}/{spec.epochs} {terms_text} "
                  f"val_loss={val_loss:.4f} val_ppl={metrics['val_perplexity']:.2f} "
                  f"({seconds:.1f}s, {metrics['tokens_per_second']:.0f} tokens/s, "
                  f"{eta(epoch_seconds, spec.epochs - epoch - 1)})", flush=True)


def fit_lm(job: LMTrainJob, datasets: dict[str, ray.data.Dataset], run_dir: str,
           callbacks: list | None = None) -> ray.train.Result:
    """Train on datasets "train" (blocks, plus the top-k columns for token_kd) and "val"
    (blocks), with checkpoints in `run_dir`/checkpoints (local path or URI); a run that already
    has checkpoints there is resumed from the latest. `callbacks` go to the RunConfig."""
    if job.strategy == "token_kd":
        columns = datasets["train"].schema().names
        missing = [c for c in TOPK_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"token_kd trains on the teacher's top-k cache, but the train "
                             f"dataset has no {missing} (columns: {columns}); pass the cache "
                             "dataset (lm.topk columns) as 'train'")
    return run_trainer(lm_train_loop, asdict(job), TrainSpec.model_validate(job.train),
                       datasets, run_dir, callbacks)


def load_lm_weights(result: ray.train.Result) -> dict[str, torch.Tensor]:
    """The fp32 state dict of the last checkpoint, for `build_lm(job.model).load_state_dict`."""
    with result.checkpoint.as_directory() as ckpt_dir:
        return torch.load(os.path.join(ckpt_dir, WEIGHTS_FILE), weights_only=True)
