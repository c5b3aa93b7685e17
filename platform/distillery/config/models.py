"""Model specs: built-in architectures and bring-your-own models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
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


MAX_LAYERS = 256
"""A config mapping's model is built on the meta device to check its shapes, layer by layer:
a layer count beyond any model distilled here is refused before that, not built for minutes."""


def check_hf_config(value: dict, kind: str) -> dict:
    """A Hugging Face config mapping (`{model_type: bert, num_hidden_layers: 2, ...}`) from
    which transformers builds a model of `kind` ("causal_lm", "sequence_classification"): built
    on the meta device here, so every shape is checked before Ray starts, at no memory."""
    import torch
    from transformers import (
        CONFIG_MAPPING,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    auto = {"causal_lm": AutoModelForCausalLM,
            "sequence_classification": AutoModelForSequenceClassification}[kind]
    config = dict(value)
    model_type = config.pop("model_type", None)
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ValueError(f"model_type: {model_type!r} is not a model type transformers knows "
                         "(e.g. gpt2, llama, bert)")
    known = CONFIG_MAPPING[model_type]().to_dict()
    unknown = sorted(k for k in config if k not in known)
    if unknown:
        # transformers keeps unknown keys as attributes: a typo would be ignored silently
        raise ValueError(f"{unknown[0]}: not a {model_type} config key")
    what = {"causal_lm": "causal LM", "sequence_classification": "sequence classifier"}[kind]
    try:
        built = CONFIG_MAPPING[model_type](**config)
        layers = built.num_hidden_layers
        if isinstance(layers, int) and layers > MAX_LAYERS:
            raise ValueError(f"{layers} layers; at most {MAX_LAYERS}")
        with torch.device("meta"):
            auto.from_config(built)
    except Exception as err:  # noqa: BLE001 - any failure on user input is that input's fault
        raise ValueError(f"cannot build a {model_type} {what} from this config: "
                         f"{' '.join(str(err).split())[:300]}") from None
    return value


class HFSpec(Strict):
    """A Hugging Face sequence classifier over token ids (text data, `data.text`)."""

    arch: Literal["hf"]
    path: str | None = None
    """A local directory save_pretrained wrote (nothing is downloaded): a sequence classifier,
    used as it is when the teacher has no `train`, or an encoder (a BERT-style checkpoint),
    whose new classification head `train` fine-tunes with the encoder."""
    config: dict[str, Any] | None = None
    """A config mapping (`{model_type: bert, num_hidden_layers: 2, hidden_size: 64, ...}`):
    fresh weights. vocab_size and pad_token_id default to the tokenizer's."""

    _config = field_validator("config")(
        lambda value: value if value is None else check_hf_config(value,
                                                                  "sequence_classification"))

    @model_validator(mode="after")
    def _one_source(self) -> HFSpec:
        if (self.path is None) == (self.config is None):
            raise ValueError("give either path (a saved model's directory) or config "
                             "(a config mapping), not both or neither")
        return self


ModelSpec = Annotated[
    MLPSpec | CNN1DSpec | ImportSpec | TorchScriptSpec | HFSpec, Field(discriminator="arch")
]
_MODEL_SPEC = TypeAdapter(ModelSpec)


def parse_model_spec(raw: dict) -> MLPSpec | CNN1DSpec | ImportSpec | TorchScriptSpec | HFSpec:
    """A model spec from its dict form (as stored in card.json and sent to workers)."""
    return _MODEL_SPEC.validate_python(raw)
