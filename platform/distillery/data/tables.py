"""User data as Parquet or CSV, local or s3://, with feature and label columns named in the spec."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from distillery.config import TableData
from distillery.data.splits import Splits, carve_val
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
    x, raw_labels = x[keep], raw_labels[keep]
    classes, y = np.unique(raw_labels, return_inverse=True)
    order = np.random.default_rng(spec.seed).permutation(len(x))
    n_test = int(round(len(x) * spec.test_fraction))
    test, rest = order[:n_test], order[n_test:]
    x_train, y_train, x_val, y_val = carve_val(x[rest], y[rest], spec.val_fraction, spec.seed)
    x_transfer = None
    if spec.transfer is not None:
        x_transfer = _features(read_table(spec.transfer.path, spec.source), spec.features,
                               "data.transfer.path")
        x_transfer = x_transfer[valid_rows(x_transfer, spec.features, spec.on_invalid,
                                           spec.transfer.path)]
    return Splits(x_train, y_train.astype(np.int64), x_val, y_val.astype(np.int64), x[test],
                  y[test].astype(np.int64), x_transfer, num_classes=len(classes))
