"""The robustness suite: the test split under each shift of `evaluate.shifts`, per severity.

MNIST-1D shifts regenerate the data with one generator argument changed (same seed, size and
split as the clean data), so the shifted test split is what the generator itself makes under
stronger noise, translation or scaling. Noise shifts leave the generator's random stream
unchanged and so perturb the very same test rows harder; translation changes how many random
numbers are drawn, so its rows are fresh samples. Generic shifts perturb the clean test split
with the train split's per-feature statistics, one seeded draw per shift reused across
severities (nested dropout masks, one noise pattern scaled up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray
from mnist1d.data import get_dataset_args, make_dataset

from distillery.config import GENERATOR_SHIFTS, Mnist1dData, ShiftSpec
from distillery.data import Splits

GENERIC_SHIFTS = {"gaussian_noise": ("sigma", 0.0), "feature_dropout": ("dropped", 0.0),
                  "scaling": ("factor", 1.0)}
"""kind -> (what the severity measures, its value on the clean data): noise sigma in units of
the feature's train std, share of values dropped, scaling factor."""


@dataclass(frozen=True)
class ShiftedSet:
    kind: str
    parameter: str
    severity: float
    x: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N,) int64


def parameter_of(kind: str) -> tuple[str, float]:
    """(the shifted parameter's name, its value on the clean data) of a shift kind."""
    if kind in GENERATOR_SHIFTS:
        name = GENERATOR_SHIFTS[kind]
        return name, float(get_dataset_args(as_dict=True)[name])
    return GENERIC_SHIFTS[kind]


def shifted_sets(shifts: list[ShiftSpec], data_spec, splits: Splits) -> list[ShiftedSet]:
    """Every (shift, severity) test set, in spec order, built by parallel Ray tasks (every
    severity of a generator shift regenerates the canonical 5000 MNIST-1D rows, the costly part)."""
    mean, std = splits.x_train.mean(axis=0), splits.x_train.std(axis=0)
    x_test = ray.put(splits.x_test)
    names, refs = [], []
    for i, shift in enumerate(shifts):
        parameter, _ = parameter_of(shift.kind)
        for severity in shift.severities:
            names.append((shift.kind, parameter, severity))
            refs.append(_regenerate_test.remote(data_spec, parameter, severity)
                        if shift.kind in GENERATOR_SHIFTS else
                        _perturb_test.remote(shift.kind, x_test, splits.y_test, severity, mean,
                                             std, seed=i))
    return [ShiftedSet(*name, *xy) for name, xy in zip(names, ray.get(refs), strict=True)]


def regenerate_test(spec: Mnist1dData, parameter: str, value: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST-1D test split as the generator makes it with `parameter` set to `value`."""
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = spec.num_samples, spec.seed, spec.train_split
    setattr(args, parameter, int(value) if parameter == "max_translation" else value)
    data = make_dataset(args)
    return data["x_test"].astype(np.float32), data["y_test"].astype(np.int64)


@ray.remote(num_cpus=1)
def _regenerate_test(spec: Mnist1dData, parameter: str, value: float):
    return regenerate_test(spec, parameter, value)


@ray.remote(num_cpus=1)
def _perturb_test(kind: str, x: np.ndarray, y: np.ndarray, severity: float, mean: np.ndarray,
                  std: np.ndarray, seed: int):
    # one seed per shift, reused across its severities: one noise pattern, nested masks
    return perturb(kind, x, severity, mean, std, np.random.default_rng(seed)), y


def perturb(kind: str, x: np.ndarray, severity: float, mean: np.ndarray, std: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """A generic shift of (N, D) features; `mean`/`std` (D,) are the train split's."""
    if kind == "gaussian_noise":
        return (x + rng.standard_normal(x.shape) * severity * std).astype(np.float32)
    if kind == "feature_dropout":
        return np.where(rng.random(x.shape) < severity, mean, x).astype(np.float32)
    if kind == "scaling":
        return (x * severity).astype(np.float32)
    raise ValueError(f"unknown shift kind {kind!r}")
