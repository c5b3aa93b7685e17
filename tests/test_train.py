import pytest

from distillery.config import TrainSpec
from distillery.train import deepspeed_config, lr_factor


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
