"""A table read by Ray Data, block by block: the driver holds its statistics and a bounded
sample, never its rows.

Opening a table makes two streaming passes, once per data fingerprint: one summarizes every
block (rows, classes, invalid rows, rows per split; data/tables.py), the next keeps each
split's fixed-key sample of at most `data.sample_rows` rows. Both are committed to the store
under data/<fingerprint>/, so every later stage and run of the same data reads them back
instead. Training and teacher inference stream the rows themselves from the files.
"""

from __future__ import annotations

import io
import json
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray

from distillery.config import TableData
from distillery.data.splits import Splits, fixed_list_to_numpy
from distillery.data.tables import SPLITS, check_columns, encode, repeat_rows, summarize
from distillery.data.text import TextEncoding, text_encoding
from distillery.storage import Store, filesystem
from distillery.store_layout import MANIFEST, table_data_dir

SAMPLE = "sample.parquet"
PATH_COLUMN = "path"
"""Ray Data's column of each row's file (include_paths), read for the summary's messages."""


class TableSource:
    def __init__(self, spec: TableData, store: Store, fingerprint: str):
        self.spec = spec
        self.store = store
        self.fingerprint = fingerprint

    @property
    def num_features(self) -> int:
        """Inputs per row: the features, or the token ids of a text."""
        return self.spec.max_length if self.spec.text is not None else len(self.spec.features)

    @cached_property
    def text(self) -> TextEncoding | None:
        """The tokenizer of text data, read here and sent to the tasks that tokenize."""
        if self.spec.text is None:
            return None
        return text_encoding(self.spec.tokenizer, self.spec.max_length)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self._stats["class_names"])

    def count(self, part: str) -> int:
        """Rows of "train", "val", "test" or "transfer" (after any dropped as invalid; no
        transfer set: 0)."""
        return self._stats["counts"].get(part, 0)

    def sample(self) -> Splits:
        return self._stats_and_sample[1]

    def rows(self, split: str) -> ray.data.Dataset:
        """Every row of `split` ("train", "val", "test"), streamed from the files."""
        rates = tuple(1.0 if s == split else 0.0 for s in SPLITS)
        return self._encoded(rates, self.class_names).drop_columns(["split"])

    def distill_rows(self, block_rows: int) -> ray.data.Dataset:
        """The train split and the transfer set (ids are row keys; see tables.encode), their
        blocks interleaved as they are read: the union passes on each input's blocks as they
        come. Not reordered: a block-order shuffle is an all-to-all step that holds every block
        before the teacher sees the first (teacher-infer of 10M rows took ~1.3x as long with
        one). `block_rows` is a hint for in-memory sources: blocks come from the files."""
        rows = self.rows("train")
        if self.spec.transfer is not None:
            rows = rows.union(self._read(self.spec.transfer.path, labelled=False).map_batches(
                encode, fn_kwargs={"spec": self.spec, "class_names": self.class_names,
                                   "labelled": False, "rates": (1.0, 1.0, 1.0),
                                   "text": self.text},
                batch_format="pyarrow"))
        return rows

    def repeated_train_rows(self, target: int, seed: int) -> ray.data.Dataset:
        """The train split repeated to about `target` rows (the baseline's budget), each block
        repeated as it streams by (one read of the files; the trainer shuffles)."""
        return self.rows("train").map_batches(
            repeat_rows, fn_kwargs={"times": target / self.count("train"), "seed": seed},
            batch_format="pyarrow")

    # ------------------------------------------------------------ reading

    def _columns(self, labelled: bool) -> list[str]:
        spec = self.spec
        wanted = [*spec.input_columns, *([spec.label, spec.key] if labelled else [])]
        return list(dict.fromkeys(c for c in wanted if c is not None))

    def _read(self, location: str, labelled: bool, paths: bool = False) -> ray.data.Dataset:
        """The table at `location` with the spec's columns only (and each row's file, with
        `paths`), after checking them against its schema (the first file's, read here: a
        footer, or the first block of a CSV or JSON file)."""
        spec = self.spec
        fs, path = filesystem(location)
        schema = pads.dataset(path, filesystem=fs, format=spec.source).schema
        where = ("data.transfer.path" if not labelled else
                 "data.text" if spec.text is not None else "data.features")
        check_columns(schema, spec, labelled=labelled, where=where)
        columns = self._columns(labelled)
        if spec.source == "csv":  # CSV's reader projects by its own option
            return ray.data.read_csv(path, filesystem=fs, include_paths=paths,
                                     convert_options=pcsv.ConvertOptions(include_columns=columns))
        # pyarrow's JSON reader (read_json's default) reads JSON Lines; lines=True would mean
        # pandas', which takes no filesystem
        read = ray.data.read_parquet if spec.source == "parquet" else ray.data.read_json
        # a projection right after the read is pushed down into it: only these columns are read
        return read(path, filesystem=fs, include_paths=paths).select_columns(
            [*columns, *([PATH_COLUMN] if paths else [])])

    def _encoded(self, rates: tuple[float, float, float],
                 class_names: tuple[str, ...]) -> ray.data.Dataset:
        return self._read(self.spec.path, labelled=True).map_batches(
            encode, fn_kwargs={"spec": self.spec, "class_names": class_names,
                               "labelled": True, "rates": rates, "text": self.text},
            batch_format="pyarrow")

    def _summarize(self, location: str, labelled: bool) -> dict:
        # the rows' files name an invalid row, unless the table has a column of that name
        paths = PATH_COLUMN not in self._columns(labelled)
        ds = self._read(location, labelled, paths=paths)
        path_column = PATH_COLUMN if paths else None
        blocks = ds.map_batches(summarize, fn_kwargs={"spec": self.spec, "labelled": labelled,
                                                      "path_column": path_column,
                                                      "text": self.text},
                                batch_format="pyarrow").take_all()
        return combine([json.loads(b["summary"]) for b in blocks], self.spec, location,
                       labelled)

    # ------------------------------------------------------------ statistics and sample

    @property
    def _stats(self) -> dict:
        return self._stats_and_sample[0]

    @cached_property
    def _stats_and_sample(self) -> tuple[dict, Splits]:
        parts = table_data_dir(self.fingerprint)
        if self.store.exists(*parts, MANIFEST):
            stats = self.store.read_json(*parts, MANIFEST)
            sample = pq.read_table(io.BytesIO(self.store.read_bytes(*parts, SAMPLE)))
            return stats, to_splits(sample, stats["class_names"])
        stats = self._summarize(self.spec.path, labelled=True)
        if self.spec.transfer is not None:
            stats["counts"]["transfer"] = self._summarize(self.spec.transfer.path,
                                                          labelled=False)["counts"]["transfer"]
        rates = tuple(min(1.0, self.spec.sample_rows / stats["counts"][s]) for s in SPLITS)
        refs = self._encoded(rates, tuple(stats["class_names"])).to_arrow_refs()
        sample = pa.concat_tables(ray.get(refs)).sort_by("id")
        buffer = io.BytesIO()
        pq.write_table(sample, buffer)
        self.store.write_bytes(buffer.getvalue(), *parts, SAMPLE)
        self.store.write_json(stats, *parts, MANIFEST)
        counts = stats["counts"]
        print(f"data: {self.spec.path}: {counts['train']} train, {counts['val']} val, "
              f"{counts['test']} test rows, {len(stats['class_names'])} classes"
              + (f"; {counts['transfer']} transfer rows" if "transfer" in counts else "")
              + f"; in memory: a sample of at most {self.spec.sample_rows} rows per split",
              flush=True)
        return stats, to_splits(sample, stats["class_names"])


def to_splits(sample: pa.Table, class_names: list[str]) -> Splits:
    """The sample (tables.encode's rows, with `split`) as in-memory Splits, in id order."""
    split = sample["split"].to_numpy()
    x = fixed_list_to_numpy(sample["x"])
    y = sample["label"].to_numpy()
    parts = [(x[split == k], y[split == k]) for k in range(len(SPLITS))]
    return Splits(*parts[0], *parts[1], *parts[2], x_transfer=None,
                  class_names=tuple(class_names))


def combine(blocks: list[dict], spec: TableData, location: str, labelled: bool) -> dict:
    """The table's statistics from its blocks' summaries (tables.summarize), or the error
    that the spec's data has: empty labels, labels outside data.classes, a NaN or infinite
    feature or a null or blank text (unless data.on_invalid is drop: then counted and said),
    a split left empty. Texts truncated to data.max_length are counted and said."""
    rows = sum(b["rows"] for b in blocks)
    invalid = sum(b["invalid"] for b in blocks)
    problem = "a NaN or infinite feature" if spec.text is None else "a null or blank text"
    truncated = sum(b.get("truncated", 0) for b in blocks)
    if truncated:
        print(f"data: {truncated} of {rows} texts of {location} are longer than "
              f"data.max_length ({spec.max_length} tokens) and were truncated", flush=True)
    if invalid and spec.on_invalid == "error":
        first = min((b["first_invalid"] for b in blocks if b["invalid"]),
                    key=lambda f: (f["file"] or "", f["key"] or ""))
        where = first["file"] or location
        row = f"the row with {spec.key} {first['key']}" if first["key"] else "a row"
        raise ValueError(f"{where}: column {first['column']!r} is {first['value']} in {row} "
                         f"({invalid} rows have {problem}; "
                         "data.on_invalid=drop leaves them out)")
    if invalid:
        print(f"data: dropped {invalid} of {rows} rows of {location} with {problem} "
              "(data.on_invalid=drop)", flush=True)
    if not labelled:
        return {"counts": {"transfer": rows - invalid}}
    empty = sum(b["empty_labels"] for b in blocks)
    if empty:
        raise ValueError(f"data.label: column {spec.label!r} has {empty} empty values; "
                         "unlabeled rows belong in data.transfer")
    unknown = sum(b.get("unknown_labels", 0) for b in blocks)
    if unknown:
        first = next(b["first_unknown"] for b in blocks if b.get("unknown_labels"))
        raise ValueError(f"data.label: {unknown} rows have a label not in data.classes, the "
                         f"first {str(first)!r} (classes: {spec.classes})")
    splits = np.sum([b["splits"] for b in blocks], axis=0).tolist() if blocks else [0, 0, 0]
    for name, count in zip(SPLITS, splits, strict=True):
        if not count:
            raise ValueError(f"data.path: the split leaves no {name} rows of {rows - invalid}; "
                             "more rows, or other data.test_fraction/val_fraction")
    if spec.classes is not None:
        class_names = list(spec.classes)
    else:  # sorted as values (2 before 10), named as text
        found = np.unique(np.array([label for b in blocks for label in b["labels"]]))
        class_names = pa.array(found.tolist()).cast(pa.string()).to_pylist()
    return {"counts": dict(zip(SPLITS, splits, strict=True)), "class_names": class_names,
            "rows": rows, "dropped": invalid, "truncated": truncated}
