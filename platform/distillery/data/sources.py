"""The data sources a spec's `data.source` names, each opened as one `Source` shape.

A source gives the pipeline its rows as Ray Datasets (to train on, and for the teacher to
label) and a bounded in-memory sample as `Splits` (validation, export metrics, evaluation,
the drift reference). MNIST-1D is generated in memory, so its sample is the whole of it; a
table streams from its files (data/table_source.py).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from typing import Protocol

import numpy as np
import pyarrow as pa
import ray

from distillery.config import DataSpec, TableData
from distillery.data.mnist1d import load_mnist1d
from distillery.data.splits import Splits, to_table
from distillery.data.table_source import TableSource
from distillery.data.text import TextEncoding
from distillery.storage import Store, file_listing


class Source(Protocol):
    num_features: int
    class_names: tuple[str, ...]
    text: TextEncoding | None  # the tokenizer of text rows; None: numeric rows

    def count(self, part: str) -> int:
        """Rows of "train", "val", "test" or "transfer"."""

    def sample(self) -> Splits:
        """Every split, or a fixed sample of each where it would not fit in memory."""

    def rows(self, split: str) -> ray.data.Dataset:
        """All rows of a labelled split: `id`, `x`, `label`."""

    def distill_rows(self, block_rows: int) -> ray.data.Dataset:
        """The rows the teacher labels: the train split and the transfer set (label null),
        mixed, so that a local shuffle while training sees both."""

    def repeated_train_rows(self, target: int, seed: int) -> ray.data.Dataset:
        """The train split repeated and shuffled to `target` rows."""


class InMemorySource:
    """A source whose splits are arrays in this process (MNIST-1D, generated here)."""

    text = None

    def __init__(self, splits: Splits):
        self.splits = splits
        self.num_features = splits.num_features
        self.class_names = splits.class_names

    def count(self, part: str) -> int:
        x = getattr(self.splits, f"x_{part}")
        return 0 if x is None else len(x)

    def sample(self) -> Splits:
        return self.splits

    def rows(self, split: str) -> ray.data.Dataset:
        return ray.data.from_arrow(to_table(getattr(self.splits, f"x_{split}"),
                                            getattr(self.splits, f"y_{split}")))

    def distill_rows(self, block_rows: int) -> ray.data.Dataset:
        return blocks_dataset(self.splits.distill_rows(), block_rows)

    def repeated_train_rows(self, target: int, seed: int) -> ray.data.Dataset:
        s = self.splits
        repeats = -(-target // len(s.x_train))
        order = np.random.default_rng(seed).permutation(
            np.tile(np.arange(len(s.x_train)), repeats))[:target]
        return ray.data.from_arrow(to_table(s.x_train[order], s.y_train[order]))


def distill_row_count(source: Source) -> int:
    """Rows of `Source.distill_rows`: the train split and the transfer set."""
    return source.count("train") + source.count("transfer")


def blocks_dataset(table: pa.Table, block_rows: int) -> ray.data.Dataset:
    """`table` as a Dataset of one block per `block_rows`: an actor pool mapping it (teacher
    inference) gets work in parallel and no block is re-sliced on the way. from_blocks reads
    the blocks' metadata here; from_arrow would run a remote task per block for it, and each
    cache would pay fresh workers importing Ray Data first (bench/teacher_infer.py)."""
    return ray.data.from_blocks([table.slice(i, block_rows)
                                 for i in range(0, table.num_rows, block_rows)])


def open_source(spec: DataSpec, store: Store, transfer: bool = True) -> Source:
    """The spec's data; a table's statistics and sample are kept in `store`. `transfer`
    False: for a caller that needs no transfer rows, which a generated source then skips."""
    if isinstance(spec, TableData):
        return TableSource(spec, store, data_fingerprint(spec))
    return InMemorySource(load_mnist1d(spec if transfer else
                                       spec.model_copy(update={"transfer": None})))


def data_fingerprint(spec: DataSpec) -> str:
    """What identifies the rows a spec reads, without reading them: the spec's data fields,
    plus for a table the path, size and modification time of each of its files (the transfer
    set's and the tokenizer's too), and for MNIST-1D the version of the package that generates
    it. Caches and cards are keyed by it.

    The trade-off against hashing every row: no pass over data that may not fit in one
    process, but a file rewritten with its size and modification time unchanged (a tool that
    restores mtimes) keeps its fingerprint, so a cache of the old rows would be reused; and a
    file copied or touched without a change gets a new one, so the cache is rebuilt once."""
    h = hashlib.sha256(spec.model_dump_json().encode())
    if isinstance(spec, TableData):
        locations = [spec.path] + ([spec.transfer.path] if spec.transfer else []) + (
            [spec.tokenizer] if spec.tokenizer else [])
        for location in locations:
            h.update(repr(file_listing(location)).encode())
    else:
        h.update(version("mnist1d").encode())
    return h.hexdigest()[:16]
