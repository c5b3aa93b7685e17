"""User data as Parquet, CSV or JSON Lines, local or s3://, with feature (or text) and label
columns named in the spec: the functions Ray Data maps over each block of it
(data/table_source.py reads it).

A row's split (train, val or test) is a function of a stable key and the spec's seed, not of a
shuffle of the whole table: the same row lands in the same split on every run, whatever the
number, order or partitioning of the files, so a reader that streams blocks assigns it block
by block. Every function here takes one block and returns something small or the block
transformed; none needs the rest of the table.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillery.config import TableData
from distillery.data.splits import to_table
from distillery.data.text import TextEncoding, blank, tokenize

SPLITS = ("train", "val", "test")
"""Split codes 0, 1, 2, as `assign_splits` gives them."""


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


def column_keys(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 keys of a column's values: integers as they are, anything else by the hash of
    its text (each distinct value hashed once)."""
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    distinct = pc.unique(column)
    hashes = np.array([hash64(str(v)) for v in distinct.to_pylist()], dtype=np.uint64)
    return hashes[pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False)]


def content_keys(x: np.ndarray, label_keys: np.ndarray) -> np.ndarray:
    """uint64 keys of rows by what they hold: the bits of each float32 feature, then the
    label's key (`column_keys` of the labels; zeros for unlabeled rows), folded through mix64.
    Identical rows share a key, so a duplicate can never sit in train and test at once; the
    key needs neither a file path nor a row position, so it is the same however the rows are
    read."""
    words = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    h = np.zeros(len(x), dtype=np.uint64)
    for column in words.T:
        h = mix64(h ^ column)
    return mix64(h ^ label_keys)


def assign_splits(keys: np.ndarray, seed: int, test_fraction: float,
                  val_fraction: float) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) per key: the key's seeded hash as a number in [0, 1)
    below `test_fraction` is test, then `val_fraction` of the rest is val. Each row's split
    depends on its key alone, so the shares are the fractions only on average."""
    u = _unit(mix64(keys ^ mix64(np.array([seed], dtype=np.uint64))[0]))
    val_edge = test_fraction + (1 - test_fraction) * val_fraction
    return np.where(u < test_fraction, 2, np.where(u < val_edge, 1, 0))


def sample_draws(keys: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per key, independent of its split's: a row is in a split's sample of
    rate r when its draw is below r, so the sample is fixed by the keys, not by read order."""
    return _unit(mix64(mix64(keys ^ np.uint64(seed)) ^ np.uint64(0x5A4D_504C_4553)))


def _unit(h: np.ndarray) -> np.ndarray:
    return h / np.float64(2**64)


def check_columns(schema: pa.Schema, spec: TableData, *, labelled: bool, where: str) -> None:
    """The spec's columns are in the table, its features numeric and its text column text;
    else the spec field that names them, and what the table has."""
    names = schema.names
    missing = [c for c in spec.input_columns if c not in names]
    if missing:
        raise ValueError(f"{where}: columns {missing} not in {names}")
    if spec.text is not None:
        kind = schema.field(spec.text).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"{where}: column {spec.text!r} is {kind}, not text")
    else:
        numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
        other = {c: str(schema.field(c).type) for c in spec.features
                 if not any(is_type(schema.field(c).type) for is_type in numeric)}
        if other:
            raise ValueError(f"{where}: columns {list(other)} are not numeric ({other})")
    if not labelled:
        return
    if spec.label not in names:
        raise ValueError(f"data.label: column {spec.label!r} not in {names}")
    if spec.key is not None and spec.key not in names:
        raise ValueError(f"data.key: column {spec.key!r} not in {names}")


def features(batch: pa.Table, columns: list[str]) -> np.ndarray:
    """(N, D) float32; through float64, so that a null of any numeric type reads as NaN."""
    return np.stack([batch[c].cast(pa.float64()).to_numpy(zero_copy_only=False)
                     for c in columns], axis=1).astype(np.float32)


def inputs(batch: pa.Table, spec: TableData, text: TextEncoding | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The block as model inputs: (N, D) float32 features or (N, max_length) int32 token ids
    of the text column by `text`; whether each row is valid (finite features, a text neither
    null nor blank); and whether each text was truncated (none for features)."""
    if spec.text is None:
        x = features(batch, spec.features)
        return x, np.isfinite(x).all(axis=1), np.zeros(len(x), dtype=bool)
    texts = batch[spec.text].to_pylist()  # once: both passes below read Python strings
    ids, truncated = tokenize(texts, text)
    return ids, ~blank(texts), truncated


def label_text(labels: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Labels as the text classes are named by ("3", "cat", "true")."""
    return pc.cast(labels, pa.string())


def row_keys(batch: pa.Table, x: np.ndarray, spec: TableData, labelled: bool) -> np.ndarray:
    """`data.key`'s value for a labelled row when the spec names one, else the row's content
    (its features, or its whole text: two texts truncated alike stay apart); a transfer row is
    keyed by its content alone."""
    if labelled and spec.key is not None:
        return column_keys(batch[spec.key])
    label_keys = (column_keys(batch[spec.label]) if labelled
                  else np.zeros(len(x), dtype=np.uint64))
    if spec.text is not None:
        return mix64(mix64(column_keys(batch[spec.text])) ^ label_keys)
    return content_keys(x, label_keys)


def summarize(batch: pa.Table, spec: TableData, labelled: bool, path_column: str | None,
              text: TextEncoding | None = None) -> pa.Table:
    """One block's statistics, as one JSON row (blocks of a file read lazily may differ in
    types, JSON never does): rows, invalid rows (a NaN or infinite feature, a null or blank
    text) and the first of them, truncated texts, and for labelled rows the empty labels,
    distinct labels, labels outside `data.classes` and valid rows per split."""
    x, valid, truncated = inputs(batch, spec, text)
    out: dict = {"rows": len(x), "invalid": int((~valid).sum()),
                 "truncated": int(truncated[valid].sum())}
    if out["invalid"]:
        row = int(np.argmin(valid))
        if spec.text is None:
            column = int(np.argmin(np.isfinite(x[row])))
            where = {"column": spec.features[column], "value": str(x[row, column])}
        else:
            text = batch[spec.text][row].as_py()
            where = {"column": spec.text, "value": "null" if text is None else "blank"}
        out["first_invalid"] = {
            **where,
            "file": batch[path_column][row].as_py() if path_column else None,
            "key": (str(batch[spec.key][row].as_py())
                    if labelled and spec.key is not None else None)}
    if labelled:
        labels = batch[spec.label]
        out["empty_labels"] = labels.null_count
        out["labels"] = pc.unique(labels.drop_null()).to_pylist()
        if spec.classes is not None:
            unknown = pc.invert(pc.is_in(label_text(labels.drop_null()),
                                         value_set=pa.array(spec.classes)))
            out["unknown_labels"] = pc.sum(unknown).as_py() or 0
            if out["unknown_labels"]:
                out["first_unknown"] = labels.drop_null().filter(unknown)[0].as_py()
        if not out["empty_labels"]:
            split = assign_splits(row_keys(batch, x, spec, True), spec.seed,
                                  spec.test_fraction, spec.val_fraction)[valid]
            out["splits"] = np.bincount(split, minlength=3).tolist()
    return pa.table({"summary": [json.dumps(out)]})


def repeat_rows(batch: pa.Table, times: float, seed: int) -> pa.Table:
    """The block `times` over: each row int(times) times, and once more when its draw (by id)
    is below the fraction left, so that the repeats total `times` x the rows on average."""
    whole, part = divmod(times, 1)
    extra = sample_draws(batch["id"].to_numpy().view(np.uint64), seed) < part
    return pa.concat_tables([batch] * int(whole) + [batch.filter(pa.array(extra))])


def class_index(labels: pa.ChunkedArray | pa.Array, class_names: tuple[str, ...]) -> np.ndarray:
    """Each label's class index (the summary already refused labels outside the classes)."""
    return pc.index_in(label_text(labels), value_set=pa.array(class_names)).to_numpy(
        zero_copy_only=False).astype(np.int64)


def encode(batch: pa.Table, spec: TableData, class_names: tuple[str, ...], labelled: bool,
           rates: tuple[float, float, float], text: TextEncoding | None = None) -> pa.Table:
    """A block of the table as the pipeline's rows (`id`, `x`, `label`; splits.to_table),
    keeping only the valid rows (`inputs`), and of a labelled row's split (0 train,
    1 val, 2 test) a `sample_draws` share of `rates[split]`; a labelled block also gets a
    `split` column. Unlabeled rows are all kept. A row's id is its key. `text`: the
    tokenizer of text data."""
    x, keep, _ = inputs(batch, spec, text)
    keys = row_keys(batch, x, spec, labelled)
    if labelled:
        split = assign_splits(keys, spec.seed, spec.test_fraction, spec.val_fraction)
        keep &= sample_draws(keys, spec.seed) < np.asarray(rates)[split]
        y = class_index(batch[spec.label], class_names)[keep]
    else:
        y = None
    rows = to_table(x[keep], y, ids=keys[keep].view(np.int64))
    return rows.append_column("split", pa.array(split[keep], pa.int8())) if labelled else rows
