"""Text corpora as fixed-length token blocks: pure packing and splitting, and a Ray Data reader.

A document is a whole text file, one JSONL record's field, or one Parquet row's column. Each
document goes to train or val by a hash of its text, so the split never depends on file order,
batching or which other documents exist, and exact duplicates land on the same side. Documents
are tokenized, each followed by EOS, concatenated, and cut into windows of block_size + 1
tokens with stride block_size: consecutive windows share one token, so every token but the very
first is a label exactly once, and the tail shorter than a window is dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import ray

FORMATS = ("text", "jsonl", "parquet")
# Documents packed as one stream in packed_blocks; each stream drops under one window at its end.
DOCS_PER_BATCH = 256


def document_split(text: str, val_fraction: float) -> str:
    """'val' when the first 8 bytes of sha256(text), read as a fraction of 2^64, fall below
    val_fraction; 'train' otherwise."""
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return "val" if h / 2**64 < val_fraction else "train"


def pack_blocks(documents: Iterable[list[int]], eos_id: int, block_size: int) -> np.ndarray:
    """(n, block_size + 1) int32 windows of the stream doc_1 EOS doc_2 EOS ..., stride
    block_size; n = (len(stream) - 1) // block_size."""
    stream = np.fromiter((t for doc in documents for t in (*doc, eos_id)), dtype=np.int32)
    n = max(len(stream) - 1, 0) // block_size
    starts = np.arange(n)[:, None] * block_size
    return stream[starts + np.arange(block_size + 1)]


def shift_block(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels), both (n, block_size), from (n, block_size + 1) windows:
    labels[:, t] = inputs[:, t + 1] is the token that position t predicts."""
    return blocks[:, :-1], blocks[:, 1:]


def read_documents(paths: str | list[str], fmt: str, field: str | None = None
                   ) -> ray.data.Dataset:
    """A dataset with one `text` column, a row per document, in file order (order is kept,
    so packed_blocks cuts the same blocks on every run).

    fmt: 'text' (each file is one UTF-8 document), 'jsonl' (field names the text of each
    record) or 'parquet' (field names a string column).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown text format {fmt!r}; valid: {list(FORMATS)}")
    if fmt == "text":
        ds = ray.data.read_binary_files(paths, include_paths=True).map_batches(
            _decode_files, batch_format="pyarrow")
    elif field is None:
        raise ValueError(f"format {fmt!r} needs the name of the field that holds the text")
    else:
        ds = (ray.data.read_json(paths, lines=True) if fmt == "jsonl"
              else ray.data.read_parquet(paths))
        ds = ds.map_batches(_text_column, fn_kwargs={"field": field, "fmt": fmt},
                            batch_format="pyarrow")
    ds.context.execution_options.preserve_order = True
    return ds


def _decode_files(batch: pa.Table) -> pa.Table:
    texts = []
    for path, data in zip(batch["path"].to_pylist(), batch["bytes"].to_pylist(), strict=True):
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); convert or remove "
                             "the file") from None
    return pa.table({"text": pa.array(texts, pa.string())})


def _text_column(batch: pa.Table, field: str, fmt: str) -> pa.Table:
    if field not in batch.column_names:
        raise ValueError(f"{fmt} field {field!r} not found; fields: {batch.column_names}")
    return pa.table({"text": batch[field].cast(pa.string())})


class TokenizeAndPack:
    """Ray Data callable class: loads the tokenizer once per actor, then turns a batch of
    documents into the packed blocks of one split (`input_ids`, block_size + 1 tokens)."""

    def __init__(self, tokenizer_dir: str, block_size: int, split: str, val_fraction: float):
        from distillery.lm.artifacts import local_hf_dir
        from distillery.models.hf_loaders import load_tokenizer

        self.tokenizer = load_tokenizer(local_hf_dir(tokenizer_dir))
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"{tokenizer_dir}: the tokenizer has no eos_token, which separates "
                             "packed documents; set one and save it again")
        self.block_size, self.split, self.val_fraction = block_size, split, val_fraction

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [t for t in batch["text"].to_pylist()
                 if document_split(t, self.val_fraction) == self.split]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        blocks = pack_blocks(ids, self.tokenizer.eos_token_id, self.block_size)
        flat = pa.array(blocks.reshape(-1), pa.int32())
        return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(
            flat, self.block_size + 1)})


def packed_blocks(documents: ray.data.Dataset, tokenizer_dir: str, block_size: int,
                  split: str, val_fraction: float) -> ray.data.Dataset:
    """The `split` ('train' or 'val') blocks of `documents` (read_documents), packed
    DOCS_PER_BATCH documents at a time, in document order."""
    return documents.map_batches(
        TokenizeAndPack,
        fn_constructor_kwargs={"tokenizer_dir": tokenizer_dir, "block_size": block_size,
                               "split": split, "val_fraction": val_fraction},
        batch_size=DOCS_PER_BATCH,
        batch_format="pyarrow",
    )
