from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray
import torch

from distillery.config import TrainSpec, parse_model_spec
from distillery.data.splits import to_table
from distillery.models import build_model
from distillery.train import (
    CHECKPOINT_TAG,
    TrainJob,
    choose_ingest,
    deepspeed_config,
    fit,
    load_weights,
    lr_factor,
    row_bytes,
)


def test_onecycle_warms_up_peaks_then_anneals_to_zero():
    assert lr_factor(0, 100, "onecycle") == pytest.approx(1 / 25)
    assert lr_factor(30, 100, "onecycle") == pytest.approx(1.0)
    assert lr_factor(65, 100, "onecycle") == pytest.approx(0.5)
    assert lr_factor(100, 100, "onecycle") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(150, 100, "onecycle") == pytest.approx(0.0, abs=1e-12)  # clamped


def test_cosine_and_constant_schedules():
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(77, 100, "constant") == 1.0


def test_deepspeed_config_splits_the_global_batch_across_workers():
    cfg = deepspeed_config(TrainSpec(batch_size=256, zero_stage=2), world_size=2, on_gpu=False)
    assert cfg["train_micro_batch_size_per_gpu"] == 128
    assert cfg["train_batch_size"] == 256
    assert cfg["zero_optimization"] == {"stage": 2}
    assert cfg["bf16"] == {"enabled": False}  # auto precision is fp32 on CPU


def test_deepspeed_config_honours_explicit_bf16():
    cfg = deepspeed_config(TrainSpec(precision="bf16"), world_size=1, on_gpu=False)
    assert cfg["bf16"] == {"enabled": True}


def adam_steps(shard: Path) -> set[int]:
    """The Adam step counts in one rank's ZeRO optimizer shard (stage 3 nests them under another
    name than stages 1-2)."""
    state = torch.load(shard, weights_only=False)["optimizer_state_dict"]
    inner = state.get("base_optimizer_state") or state["optimizer_state_dict"]
    return {int(s["step"]) for s in inner["state"].values()}


@pytest.mark.integration
@pytest.mark.parametrize("zero_stage, precision, ingest", [(2, "fp32", "materialize"),
                                                           (3, "bf16", "stream")])
def test_a_zero_run_on_two_cpu_workers_resumes_its_shards_and_exports_whole_weights(
        local_ray, tmp_path, zero_stage, precision, ingest):
    """(Streamed rows, split anew each epoch, give each worker the same 4 steps an epoch as
    materialized ones: the Adam step count below holds for both.)"""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    datasets = {"train": ray.data.from_arrow(to_table(x[:64], y[:64])),
                "val": ray.data.from_arrow(to_table(x[64:], y[64:]))}
    model_spec = {"arch": "mlp", "hidden": [8]}
    # 64 rows, 8 a worker a step: 4 optimizer steps an epoch
    job = TrainJob(model=model_spec, num_features=4, num_classes=2, rows=64,
                   train={"epochs": 1, "batch_size": 16, "num_workers": 2, "use_gpu": False,
                          "zero_stage": zero_stage, "precision": precision,
                          "ingest": ingest})
    first = fit(job, datasets, str(tmp_path))
    job.train["epochs"] = 2
    second = fit(job, datasets, str(tmp_path))

    # epoch 1 was not trained again (its checkpoint's metrics are the first run's), and every
    # rank's Adam state went on from its own shard: 8 steps, not 4
    assert second.best_checkpoints[0][1] == first.metrics
    assert second.metrics["epoch"] == 2
    checkpoint = Path(second.checkpoint.path)
    shards = sorted((checkpoint / CHECKPOINT_TAG).glob("*zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2
    assert all(adam_steps(shard) == {8} for shard in shards)

    # the export is the whole model, as DeepSpeed's own consolidation of the shards has it
    # (rounded to bf16 when trained in bf16), and a plain module loads it
    weights = load_weights(second)[0]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    master = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=CHECKPOINT_TAG)
    assert weights.keys() == master.keys()
    assert all(torch.equal(weights[k], master[k].to(dtype).float()) for k in weights)
    model = build_model(parse_model_spec(model_spec), 4, 2)
    model.load_state_dict(weights)
    with torch.no_grad():
        predicted = model.to(dtype)(torch.tensor(x[64:], dtype=dtype)).argmax(dim=-1).numpy()
    assert (predicted == y[64:]).mean() == second.metrics["val_accuracy"]


def test_row_bytes_counts_fixed_size_lists_exactly():
    types = [pa.int64(), pa.list_(pa.float32(), 40), pa.list_(pa.list_(pa.float16(), 3), 2),
             pa.string()]
    assert row_bytes(types) == 8 + 160 + 12 + 16


def test_auto_ingest_materializes_what_takes_a_quarter_of_the_object_store_at_most():
    assert choose_ingest(250, 1000) == "materialize"
    assert choose_ingest(251, 1000) == "stream"
    assert choose_ingest(1, 0) == "stream"  # no object store known: never pull it all in
