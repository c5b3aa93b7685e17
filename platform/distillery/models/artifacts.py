"""Exported models in the store: weights, TorchScript and card.json (written last = committed)."""

from __future__ import annotations

import io
import platform as _platform
import time
from importlib.metadata import version
from typing import Any

import torch
from torch import nn

import distillery
from distillery.config import ImportSpec, ModelSpec, TorchScriptSpec, parse_model_spec
from distillery.models.registry import build_model, count_params
from distillery.models.text_classifier import TextClassifier, stored_spec
from distillery.storage import Store
from distillery.store_layout import CARD, read_card


def library_versions() -> dict[str, str]:
    names = ("torch", "ray", "deepspeed", "pyarrow")
    # distillery's own version from the package, which a plain clone has without metadata
    return {"python": _platform.python_version(), "distillery": distillery.__version__,
            **{n: version(n) for n in names}}


def model_card(model: nn.Module, model_spec: ModelSpec, *, num_features: int, num_classes: int,
               **extra: Any) -> dict:
    """The card of a model; its `architecture` rebuilds it without the files the spec may
    have named (a Hugging Face model is stored by its config)."""
    if isinstance(model, TextClassifier):
        model_spec = stored_spec(model)
    return {
        "architecture": model_spec.model_dump(),
        "num_features": num_features,
        "num_classes": num_classes,
        "params": count_params(model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": library_versions(),
        **extra,
    }


def save_model(store: Store, parts: tuple[str, ...], model: nn.Module, card: dict,
               files: dict[str, bytes] | None = None) -> dict:
    """Write model.pt (state_dict), model.ts (TorchScript), any other `files` (a text model's
    tokenizer) and then card.json into parts."""
    for name, data in (files or {}).items():
        store.write_bytes(data, *parts, name)
    model = model.cpu().eval()
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    store.write_bytes(weights.getvalue(), *parts, "model.pt")
    scripted = io.BytesIO()
    exported = (model.traced(card["num_features"]) if isinstance(model, TextClassifier)
                else torch.jit.script(model))
    torch.jit.save(exported, scripted)
    store.write_bytes(scripted.getvalue(), *parts, "model.ts")
    card = {**card, "size_bytes": {"model.pt": weights.getbuffer().nbytes,
                                   "model.ts": scripted.getbuffer().nbytes}}
    store.write_json(card, *parts, CARD)
    return card


def load_model(store: Store, parts: tuple[str, ...]) -> tuple[nn.Module, dict]:
    """The model and its card; never unpickles anything but tensors."""
    card = read_card(store, parts)
    spec = parse_model_spec(card["architecture"])
    if isinstance(spec, TorchScriptSpec):
        model = torch.jit.load(io.BytesIO(store.read_bytes(*parts, "model.ts")),
                               map_location="cpu")
    else:
        if isinstance(spec, ImportSpec):
            # the stored model.pt is the truth; the user's original weights file may be gone
            spec = spec.model_copy(update={"weights": None})
        model = build_model(spec, card["num_features"], card["num_classes"])
        state = torch.load(io.BytesIO(store.read_bytes(*parts, "model.pt")), weights_only=True)
        model.load_state_dict(state)
    return model.eval(), card
