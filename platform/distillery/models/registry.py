"""Architectures a spec can name (`model.arch`), and bring-your-own models.

`mlp` and `cnn1d` take (B, D) float vectors and return (B, C) logits; `hf` takes (B, L) token
ids (text data). `import` calls a user factory (`package.module:function`); `torchscript` loads a
scripted model as it is.
"""

from __future__ import annotations

import hashlib
import importlib
import io

import torch
from torch import nn

from distillery.config import (
    CNN1DSpec,
    HFSpec,
    ImportSpec,
    MLPSpec,
    ModelSpec,
    TorchScriptSpec,
)
from distillery.storage import read_location


class MLP(nn.Module):
    def __init__(self, num_features: int, num_classes: int, hidden: list[int]):
        super().__init__()
        layers, width = [], num_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, C)
        return self.head(self.features(x))


class CNN1D(nn.Module):
    """Conv stack over the signal, then a dense head (or global average pooling if hidden=0)."""

    def __init__(self, num_features: int, num_classes: int, channels: list[int],
                 kernel_size: int, hidden: int):
        super().__init__()
        layers, width = [], 1
        for i, out in enumerate(channels):
            layers += [nn.Conv1d(width, out, kernel_size if i == 0 else 3,
                                 stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
            width = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            length = self.features(torch.zeros(1, 1, num_features)).shape[-1]
        if hidden:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * length, hidden), nn.ReLU(),
                                      nn.Linear(hidden, num_classes))
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                                      nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, 1, D) -> (B, C)
        return self.head(self.features(x.unsqueeze(1)))


def build_model(spec: ModelSpec, num_features: int, num_classes: int) -> nn.Module:
    if isinstance(spec, MLPSpec):
        return MLP(num_features, num_classes, spec.hidden)
    if isinstance(spec, CNN1DSpec):
        return CNN1D(num_features, num_classes, spec.channels, spec.kernel_size, spec.hidden)
    if isinstance(spec, ImportSpec):
        module_name, func = spec.factory.split(":")
        model = getattr(importlib.import_module(module_name), func)(**spec.kwargs)
        if spec.weights:
            model.load_state_dict(torch.load(io.BytesIO(read_location(spec.weights)),
                                             weights_only=True))
        return model
    if isinstance(spec, TorchScriptSpec):
        return torch.jit.load(io.BytesIO(read_location(spec.path)), map_location="cpu")
    if isinstance(spec, HFSpec):
        from distillery.models.text_classifier import build_text_classifier

        return build_text_classifier(spec, num_classes)
    raise TypeError(f"unsupported model spec {type(spec).__name__}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fingerprint(spec: ModelSpec, model: nn.Module) -> str:
    """Architecture + weights: equal iff the same spec holds the same tensors."""
    h = hashlib.sha256(spec.model_dump_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
