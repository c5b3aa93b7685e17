"""Text rows as token ids: a table's text column through the teacher's Hugging Face (fast)
tokenizer, block by block inside Ray Data's tasks (data/tables.py calls `tokenize`).

Each row becomes `max_length` ids, special tokens included, padded with the tokenizer's padding
id; the models' attention mask is where the ids are not padding (models/text_classifier.py).
The driver reads the tokenizer's directory once; its rules travel to the tasks with them
(`TextEncoding`), so no node but the driver's needs the directory. An exported text model keeps
them beside its weights (`TOKENIZER_FILE`, the card's `tokenizer`), so the Serve replica that
loads it tokenizes its requests with exactly the rules it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from distillery.storage import Store


@dataclass(frozen=True)
class TextEncoding:
    """A fast tokenizer's serialized rules (its tokenizer.json) and the row length."""

    rules: str
    pad_id: int
    pad_token: str
    max_length: int

    def card_entry(self) -> dict:
        """The card's `tokenizer`: everything but the rules, which are in TOKENIZER_FILE."""
        return {"file": TOKENIZER_FILE, "max_length": self.max_length, "pad_id": self.pad_id,
                "pad_token": self.pad_token}

    @classmethod
    def from_card(cls, entry: dict, rules: str) -> TextEncoding:
        return cls(rules, entry["pad_id"], entry["pad_token"], entry["max_length"])


TOKENIZER_FILE = "tokenizer.json"


def stored_encoding(store: Store, parts: tuple[str, ...], card: dict) -> TextEncoding | None:
    """The tokenizer exported with the model at `parts` (whose card is `card`); None for a
    model of numeric rows."""
    entry = card.get("tokenizer")
    if entry is None:
        return None
    return TextEncoding.from_card(entry, store.read_bytes(*parts, entry["file"]).decode())


def text_encoding(path: str, max_length: int) -> TextEncoding:
    # imported here: every process that reads a table imports this module, and transformers
    # costs each of them ~0.5-1 s (a Ray Data worker per task) where no text is read
    from distillery.models.hf_loaders import load_tokenizer

    tokenizer = load_tokenizer(path, "data.tokenizer")
    return TextEncoding(tokenizer.backend_tokenizer.to_str(), tokenizer.pad_token_id,
                        tokenizer.pad_token, max_length)


@lru_cache(maxsize=4)
def encoder(encoding: TextEncoding):
    """The Rust tokenizer set to truncate and pad to `max_length`, built once per worker
    process (a BERT vocabulary's rules take ~0.1 s to parse)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(encoding.rules)
    backend.enable_truncation(encoding.max_length)
    backend.enable_padding(length=encoding.max_length, pad_id=encoding.pad_id,
                           pad_token=encoding.pad_token)
    return backend


def blank(texts: list[str | None]) -> np.ndarray:
    """Rows whose text is null or only whitespace: nothing for a model to read."""
    return np.array([not (isinstance(t, str) and t.strip()) for t in texts], dtype=bool)


def tokenize(texts: list[str | None], encoding: TextEncoding) -> tuple[np.ndarray, np.ndarray]:
    """(N, max_length) int32 ids of each text (a null one as the empty text), and whether each
    was truncated to fit."""
    encodings = encoder(encoding).encode_batch([t if isinstance(t, str) else "" for t in texts])
    ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(
        len(texts), encoding.max_length)
    truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
    return ids, truncated


DESCRIPTORS = ("tokens", "unknown_share")
"""What drift monitoring compares of a text (monitoring/drift.py), from its ids alone, so that
the reference (held-out rows, stored as ids) and the live window (logged texts, tokenized again)
are described alike."""


def descriptors(ids: np.ndarray, encoding: TextEncoding) -> np.ndarray:
    """(N, 2) float32 of (N, max_length) ids: each text's tokens (ids other than padding,
    special tokens included: max_length when it was truncated) and the share of them the
    vocabulary did not know (the tokenizer's unknown token; 0 for a tokenizer without one)."""
    real = ids != encoding.pad_id
    tokens = real.sum(axis=1)
    model = encoder(encoding).model
    unk_token = getattr(model, "unk_token", None)
    unk_id = None if unk_token is None else encoder(encoding).token_to_id(unk_token)
    unknown = np.zeros(len(ids)) if unk_id is None else ((ids == unk_id) & real).sum(axis=1)
    return np.stack([tokens, unknown / np.maximum(tokens, 1)], axis=1).astype(np.float32)
