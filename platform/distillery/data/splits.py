"""Labelled train/val/test splits plus an optional unlabeled transfer set, as numpy arrays.

Every source returns the same `Splits`, so the rest of the pipeline never asks where data came
from. Splits are deterministic: the same spec always yields the same rows in the same order
(sources.data_fingerprint says which rows, without reading them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray  # (N, D) float32 features, or int32 token ids (text)
    y_train: np.ndarray  # (N,) int64
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_transfer: np.ndarray | None  # (M, D) float32, unlabeled
    class_names: tuple[str, ...]  # the label of each class index

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_distill_rows(self) -> int:
        return len(self.x_train) + (0 if self.x_transfer is None else len(self.x_transfer))

    def distill_rows(self) -> pa.Table:
        """The rows the teacher labels: the labelled train split (ids 0..N-1), then the transfer
        set, in a fixed random order. Training streams blocks with only a local shuffle, so
        every block must already mix labelled and unlabeled rows."""
        rows = to_table(self.x_train, self.y_train)
        if self.x_transfer is not None:
            unlabeled = to_table(self.x_transfer, None, first_id=len(self.x_train))
            rows = pa.concat_tables([rows, unlabeled])
        return rows.take(np.random.default_rng(0).permutation(rows.num_rows))


def to_table(x: np.ndarray, y: np.ndarray | None, first_id: int = 0,
             ids: np.ndarray | None = None) -> pa.Table:
    """Rows as Arrow: `id` int64 (`ids`, else counting from `first_id`), `x`
    fixed_size_list<float32> (features) or <int32> (token ids), `label` int64 (null =
    unlabeled)."""
    n, d = x.shape
    if ids is None:
        ids = np.arange(first_id, first_id + n, dtype=np.int64)
    dtype = np.int32 if np.issubdtype(x.dtype, np.integer) else np.float32
    flat = pa.array(np.ascontiguousarray(x, dtype=dtype).reshape(-1))
    label = pa.nulls(n, pa.int64()) if y is None else pa.array(y.astype(np.int64))
    return pa.table({
        "id": pa.array(ids),
        "x": pa.FixedSizeListArray.from_arrays(flat, d),
        "label": label,
    })


def fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N, D) view of a fixed_size_list column; `flatten` honours slices that `.values` ignores."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)


def carve_val(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Hold out the last `fraction` of a seeded permutation as validation."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * fraction))
    train, val = order[: len(x) - n_val], order[len(x) - n_val:]
    return x[train], y[train], x[val], y[val]
