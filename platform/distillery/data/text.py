"""Text rows as token ids: a table's text column through the teacher's Hugging Face (fast)
tokenizer, block by block inside Ray Data's tasks (data/tables.py calls `tokenize`).

Each row becomes `max_length` ids, special tokens included, padded with the tokenizer's padding
id; the models' attention mask is where the ids are not padding (models/text_classifier.py).
"""

from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np
import pyarrow as pa

from distillery.models.hf_loaders import load_tokenizer


@lru_cache(maxsize=4)
def encoder(path: str, max_length: int):
    """The tokenizer's Rust backend set to truncate and pad to `max_length` (loaded once per
    worker process: a tokenizer.json of a BERT vocabulary takes ~0.1 s to parse)."""
    tokenizer = load_tokenizer(path, "data.tokenizer")
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.enable_truncation(max_length)
    backend.enable_padding(length=max_length, pad_id=tokenizer.pad_token_id,
                           pad_token=tokenizer.pad_token)
    return backend


def blank(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Rows whose text is null or only whitespace: nothing for a model to read."""
    return np.array([not (isinstance(t, str) and t.strip()) for t in texts.to_pylist()],
                    dtype=bool)


def tokenize(texts: pa.Array | pa.ChunkedArray, path: str, max_length: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """(N, max_length) int32 ids of each text (a null one as the empty text), and whether each
    was truncated to fit."""
    values = [t if isinstance(t, str) else "" for t in texts.to_pylist()]
    encodings = encoder(path, max_length).encode_batch(values)
    ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(values), max_length)
    truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
    return ids, truncated
