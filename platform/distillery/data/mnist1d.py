"""The built-in MNIST-1D source (Greydanus 2020), generated locally by the `mnist1d` package."""

from __future__ import annotations

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset

from distillery.config import Mnist1dData
from distillery.data.splits import Splits, carve_val


def generate(num_samples: int, seed: int, train_split: float) -> dict:
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_split
    return make_dataset(args)


def load_mnist1d(spec: Mnist1dData) -> Splits:
    data = generate(spec.num_samples, spec.seed, spec.train_split)
    x = data["x"].astype(np.float32)
    y = data["y"].astype(np.int64)
    x_train, y_train, x_val, y_val = carve_val(x, y, spec.val_fraction, spec.seed)
    x_transfer = None
    if spec.transfer is not None:
        # train_split=1 keeps every generated row in "x"; labels are dropped on purpose.
        extra = generate(spec.transfer.num_samples, spec.transfer.seed, 1.0)
        x_transfer = extra["x"].astype(np.float32)
    return Splits(x_train, y_train, x_val, y_val, data["x_test"].astype(np.float32),
                  data["y_test"].astype(np.int64), x_transfer,
                  class_names=tuple(str(digit) for digit in range(10)))
