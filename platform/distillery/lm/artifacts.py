"""Causal LMs in the store: a save_pretrained directory (`hf/`, safetensors weights and the
tokenizer) beside card.json, which is written last and so commits the model.

The store may be S3, and transformers reads and writes only local directories, so both ways
go through a local temporary directory. Loading never unpickles: weights are safetensors.
"""

from __future__ import annotations

import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from distillery.models.artifacts import library_versions
from distillery.models.hf_loaders import load_causal_lm, load_tokenizer
from distillery.storage import Store, is_remote
from distillery.store_layout import CARD, read_card

HF_DIR = "hf"


def lm_card(model: PreTrainedModel, **extra: Any) -> dict:
    """What every LM card holds: architecture (the HF config), size, time and versions."""
    return {
        "kind": "causal_lm",
        "architecture": model.config.to_diff_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {**library_versions(), "transformers": version("transformers")},
        **extra,
    }


def save_lm(store: Store, parts: tuple[str, ...], model: PreTrainedModel,
            tokenizer: PreTrainedTokenizerBase, card: dict) -> dict:
    """Write parts/hf/* (model and tokenizer) and then parts/card.json; returns the card with
    the bytes of each file."""
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        model.cpu().eval().save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for path in sorted(Path(tmp).iterdir()):
            data = path.read_bytes()
            store.write_bytes(data, *parts, HF_DIR, path.name)
            sizes[path.name] = len(data)
    card = {**card, "size_bytes": sizes}
    store.write_json(card, *parts, CARD)
    return card


def load_lm(store: Store, parts: tuple[str, ...]
            ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """The model (eval mode), its tokenizer and its card."""
    card = read_card(store, parts)
    with tempfile.TemporaryDirectory() as tmp:
        fetch_hf_dir(store, parts, tmp)
        where = store.uri(*parts, HF_DIR)
        return load_causal_lm(tmp, where).eval(), load_tokenizer(tmp, where), card


def local_hf_dir(location: str) -> str:
    """A directory transformers can read for `location`: itself when local, else a temporary
    copy of the files under the URI (an S3 store seen from any node of a cluster)."""
    if not is_remote(location):
        return location
    return fetch_hf_dir(Store(location), (), tempfile.mkdtemp(prefix="distillery-hf-"),
                        subdir=())


def fetch_hf_dir(store: Store, parts: tuple[str, ...], local_dir: str,
                 subdir: tuple[str, ...] = (HF_DIR,)) -> str:
    """Copy parts/hf/* into `local_dir` (for code that takes a directory); returns it."""
    for name in store.listdir(*parts, *subdir):
        (Path(local_dir) / name).write_bytes(store.read_bytes(*parts, *subdir, name))
    return local_dir
