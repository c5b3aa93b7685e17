"""Evaluation specs: robustness shifts, latency, gates."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from distillery.config.base import Strict

GENERATOR_SHIFTS = {"iid_noise": "iid_noise_scale", "corr_noise": "corr_noise_scale",
                    "translation": "max_translation", "scale": "scale_coeff"}
"""MNIST-1D shift kinds -> the argument of the mnist1d generator (get_dataset_args) they set."""


class ShiftSpec(Strict):
    kind: Literal["iid_noise", "corr_noise", "translation", "scale", "gaussian_noise",
                  "feature_dropout", "scaling"]
    """mnist1d data only: iid_noise, corr_noise, translation and scale regenerate the test split
    with the generator's iid_noise_scale, corr_noise_scale, max_translation or scale_coeff set to
    each severity (its defaults: 0.02, 0.25, 48, 0.4). Any data: gaussian_noise adds noise with
    sigma = severity x each feature's train std; feature_dropout replaces that share of the
    values by the feature's train mean; scaling multiplies every feature by the severity."""
    severities: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    """Values of the shift's parameter, mildest first; the report plots accuracy against them."""

    @model_validator(mode="after")
    def _in_range(self) -> ShiftSpec:
        for value in self.severities:
            if self.kind == "translation" and (value != int(value) or value < 1):
                raise ValueError(f"translation severities are max_translation values, whole "
                                 f"numbers >= 1, got {value}")
            if self.kind == "scale" and value >= 2:
                raise ValueError(f"scale severities must be < 2 (the generator scales each "
                                 f"signal by 1 + scale_coeff * (u - 0.5)), got {value}")
            if self.kind == "feature_dropout" and value > 1:
                raise ValueError(f"feature_dropout severities are shares, <= 1, got {value}")
        return self


class LatencySpec(Strict):
    batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 1024],
                                                          min_length=1)
    """Batch sizes timed; the largest also measures throughput gates and peak memory."""
    warmup: int = Field(default=10, ge=0)
    """Untimed runs before timing, per batch size (allocator and kernel caches warm up)."""
    repetitions: int = Field(default=200, ge=5)
    """Timed runs per batch size, at most; percentiles are over these."""
    seconds: float = Field(default=2.0, gt=0)
    """Time budget per model and batch size: timing stops after `repetitions` runs or once
    this many seconds are spent (but never before 5 runs), whichever comes first."""


class GatesSpec(Strict):
    """Thresholds every evaluated model of role `student` must meet; unset gates are skipped."""

    min_accuracy_ratio: float | None = Field(default=None, gt=0)
    """Student test accuracy / teacher test accuracy, at least."""
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    """Top-1 agreement with the teacher on the test split, at least."""
    max_ece: float | None = Field(default=None, ge=0, le=1)
    """Expected calibration error on the test split (before temperature scaling), at most."""
    min_speedup: float | None = Field(default=None, gt=0)
    """Student / teacher throughput (rows/s) at the largest latency batch size, at least."""


class EvaluateSpec(Strict):
    shifts: list[ShiftSpec] = Field(default_factory=list)
    """The robustness suite: each shift is applied to the test split at every severity."""
    top_k: int = Field(default=3, gt=0)
    """k of the top-k accuracy (capped at the number of classes)."""
    latency: LatencySpec = Field(default_factory=LatencySpec)
    """Efficiency timings; each model is timed alone, single-threaded, in a fresh process."""
    gates: GatesSpec = Field(default_factory=GatesSpec)
    """Pass/fail thresholds; a failing gate makes `distillery evaluate` exit non-zero."""
