"""Model specs: built-in architectures and bring-your-own models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    TypeAdapter,
)

from distillery.config.base import Strict


class MLPSpec(Strict):
    arch: Literal["mlp"]
    hidden: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [64])
    """Widths of the hidden layers, input to output."""


class CNN1DSpec(Strict):
    arch: Literal["cnn1d"]
    channels: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    """Output channels of each conv layer; layers after the first halve the length (stride 2)."""
    kernel_size: int = Field(default=5, gt=0)
    """Kernel of the first conv layer; later layers use 3."""
    hidden: int = Field(default=0, ge=0)
    """Width of the dense layer before the classifier; 0 = global average pooling instead."""


class ImportSpec(Strict):
    arch: Literal["import"]
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """`package.module:function` returning a torch.nn.Module."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    """Optional state_dict file (loaded with weights_only=True) for a pretrained model."""


class TorchScriptSpec(Strict):
    arch: Literal["torchscript"]
    path: str
    """A TorchScript file (torch.jit.save); the model is taken as trained."""


ModelSpec = Annotated[
    MLPSpec | CNN1DSpec | ImportSpec | TorchScriptSpec, Field(discriminator="arch")
]
_MODEL_SPEC = TypeAdapter(ModelSpec)


def parse_model_spec(raw: dict) -> MLPSpec | CNN1DSpec | ImportSpec | TorchScriptSpec:
    """A model spec from its dict form (as stored in card.json and sent to workers)."""
    return _MODEL_SPEC.validate_python(raw)
