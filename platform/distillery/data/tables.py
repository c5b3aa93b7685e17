"""User data as Parquet or CSV, local or s3://, with feature and label columns named in the spec.

A row's split (train, val or test) is a function of a stable key and the spec's seed, not of a
shuffle of the whole table: the same row lands in the same split on every run, whatever the
number, order or partitioning of the files, and a reader that streams blocks can assign it
block by block.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from distillery.config import TableData
from distillery.data.splits import Splits
from distillery.storage import filesystem


def read_table(location: str, fmt: str) -> pa.Table:
    fs, path = filesystem(location)
    if fmt == "csv" and fs.get_file_info(path).is_file:
        with fs.open_input_stream(path) as f:
            return pcsv.read_csv(f)
    return pads.dataset(path, filesystem=fs, format=fmt).to_table()


def file_listing(location: str) -> list[tuple[str, int, int]]:
    """(path, size in bytes, modification time in ns) of the file at `location`, or of every
    file under it, in path order: what identifies the table without reading it."""
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    found = ([info] if info.is_file else
             fs.get_file_info(pafs.FileSelector(path, recursive=True)))
    return sorted((f.path, f.size, f.mtime_ns or 0) for f in found if f.is_file)


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise: nearby uint64s to unrelated ones."""
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def content_keys(x: np.ndarray, labels: pa.ChunkedArray) -> np.ndarray:
    """uint64 keys of rows by what they hold: the bits of each float32 feature, then the
    label's key, folded through mix64. Identical rows share a key, so a duplicate can never
    sit in train and test at once; the key needs neither a file path nor a row position, so
    it is the same however the rows are read."""
    words = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    h = np.zeros(len(x), dtype=np.uint64)
    for column in words.T:
        h = mix64(h ^ column)
    return mix64(h ^ column_keys(labels))


def column_keys(column: pa.ChunkedArray) -> np.ndarray:
    """uint64 keys of a key column's values: integers as they are, anything else by the hash
    of its text."""
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    return np.array([hash64(str(v)) for v in column.to_pylist()], dtype=np.uint64)


def assign_splits(keys: np.ndarray, seed: int, test_fraction: float,
                  val_fraction: float) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) per key: the key's seeded hash as a number in [0, 1)
    below `test_fraction` is test, then `val_fraction` of the rest is val. Each row's split
    depends on its key alone, so the shares are the fractions only on average."""
    u = mix64(keys ^ mix64(np.array([seed], dtype=np.uint64))[0]) / np.float64(2**64)
    val_edge = test_fraction + (1 - test_fraction) * val_fraction
    return np.where(u < test_fraction, 2, np.where(u < val_edge, 1, 0))


def _features(table: pa.Table, columns: list[str], where: str) -> np.ndarray:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{where}: columns {missing} not in {table.column_names}")
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    other = {c: str(table.schema.field(c).type) for c in columns
             if not any(is_type(table.schema.field(c).type) for is_type in numeric)}
    if other:
        raise ValueError(f"{where}: columns {list(other)} are not numeric ({other})")
    # through float64, so that a null of any numeric type reads as NaN
    return np.stack([table[c].cast(pa.float64()).to_numpy(zero_copy_only=False)
                     for c in columns], axis=1).astype(np.float32)


def valid_rows(x: np.ndarray, columns: list[str], on_invalid: str, where: str) -> np.ndarray:
    """The mask of rows whose features are all finite. A NaN or infinite value (a null reads
    as NaN) is an error naming its column and its row (0-based, in the order the files are
    read), or with `on_invalid` "drop" its row is left out, and counted on the console."""
    finite = np.isfinite(x)
    valid = finite.all(axis=1)
    dropped = int((~valid).sum())
    if dropped and on_invalid == "error":
        row = int(np.argmin(valid))
        column = int(np.argmin(finite[row]))
        raise ValueError(f"{where}: column {columns[column]!r} is {x[row, column]} at row {row} "
                         f"({dropped} rows have a NaN or infinite feature; "
                         "data.on_invalid=drop leaves them out)")
    if dropped:
        print(f"data: dropped {dropped} of {len(x)} rows of {where} with a NaN or infinite "
              "feature (data.on_invalid=drop)", flush=True)
    return valid


def class_indices(labels: np.ndarray, classes: list[str] | None) -> tuple[tuple[str, ...],
                                                                          np.ndarray]:
    """(class names, each label's class index): the names are `classes` when given (a label
    not among them is an error), else the distinct labels, sorted; labels compare as text."""
    if classes is None:
        found, index = np.unique(labels, return_inverse=True)
        return tuple(str(c) for c in found), index
    position = {name: i for i, name in enumerate(classes)}
    index = np.array([position.get(str(label), -1) for label in labels.tolist()], np.int64)
    if (unknown := index < 0).any():
        raise ValueError(f"data.label: {int(unknown.sum())} rows have a label not in "
                         f"data.classes, the first {str(labels[np.argmax(unknown)])!r} "
                         f"(classes: {classes})")
    return tuple(classes), index


def load_table(spec: TableData) -> Splits:
    table = read_table(spec.path, spec.source)
    x = _features(table, spec.features, "data.features")
    keep = valid_rows(x, spec.features, spec.on_invalid, spec.path)
    if spec.label not in table.column_names:
        raise ValueError(f"data.label: column {spec.label!r} not in {table.column_names}")
    if table[spec.label].null_count:
        raise ValueError(f"data.label: column {spec.label!r} has {table[spec.label].null_count} "
                         "empty values; unlabeled rows belong in data.transfer")
    raw_labels = table[spec.label].to_numpy(zero_copy_only=False)
    if spec.key is None:
        keys = content_keys(x, table[spec.label])
    elif spec.key not in table.column_names:
        raise ValueError(f"data.key: column {spec.key!r} not in {table.column_names}")
    else:
        keys = column_keys(table[spec.key])
    x, raw_labels, keys = x[keep], raw_labels[keep], keys[keep]
    class_names, y = class_indices(raw_labels, spec.classes)
    split = assign_splits(keys, spec.seed, spec.test_fraction, spec.val_fraction)
    train, val, test = (split == k for k in (0, 1, 2))
    for name, rows in (("train", train), ("val", val), ("test", test)):
        if not rows.any():
            raise ValueError(f"data.path: the split leaves no {name} rows of {len(split)}; "
                             "more rows, or other data.test_fraction/val_fraction")
    x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]
    x_transfer = None
    if spec.transfer is not None:
        x_transfer = _features(read_table(spec.transfer.path, spec.source), spec.features,
                               "data.transfer.path")
        x_transfer = x_transfer[valid_rows(x_transfer, spec.features, spec.on_invalid,
                                           spec.transfer.path)]
    return Splits(x_train, y_train.astype(np.int64), x_val, y_val.astype(np.int64), x[test],
                  y[test].astype(np.int64), x_transfer, class_names=class_names)
