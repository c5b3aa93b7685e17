"""Hugging Face sequence classifiers as the pipeline's models: (B, L) token ids in, (B, C)
logits out, so that the cache, the trainer, evaluation and serving treat them as any model.

A model built from a saved directory is stored by its config (`stored_spec`): the store's
card and weights rebuild it where that directory does not exist (a serving node).
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from distillery.config import HFSpec

# config keys that describe the checkpoint rather than the architecture, or that the pipeline
# sets itself (num_labels: the data's classes)
_NOT_ARCHITECTURE = ("architectures", "transformers_version", "_name_or_path", "id2label",
                     "label2id", "num_labels", "dtype", "torch_dtype", "problem_type")


class TextClassifier(nn.Module):
    """`model` (a transformers sequence classifier) on token ids; the attention mask is where
    the ids are not padding."""

    def __init__(self, model: nn.Module, pad_token_id: int):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) ids -> (B, C)
        ids = x.long()
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_token_id).long()
                          ).logits

    def traced(self, length: int) -> torch.jit.ScriptModule:
        """TorchScript by tracing (transformers' models do not script), on padded ids of
        `length`: the graph holds for any batch size and length (the mask is computed inside)."""
        from distillery.models.hf_loaders import quiet_transformers

        example = torch.full((2, length), self.pad_token_id, dtype=torch.int32)
        example[:, :2] = 1
        # quiet: transformers' note that the config names no loss type, the tracer's notes on
        # transformers' shape checks, and transformers' on the deprecated properties it reads
        with quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.trace(self, example, strict=False)


def build_text_classifier(spec: HFSpec, num_classes: int) -> TextClassifier:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from distillery.models.hf_loaders import load_sequence_classifier

    if spec.config is not None:
        config = AutoConfig.for_model(**spec.config, num_labels=num_classes)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = load_sequence_classifier(spec.path, num_classes, "model.path")
    return TextClassifier(model, model.config.pad_token_id or 0)


def stored_spec(model: TextClassifier) -> HFSpec:
    """The spec that rebuilds `model`'s architecture from its config alone."""
    config = model.model.config
    known = type(config)().to_dict()  # a checkpoint's config may carry keys of older versions
    config = {k: v for k, v in config.to_diff_dict().items()
              if k in known and k not in _NOT_ARCHITECTURE}
    config["model_type"] = model.model.config.model_type
    return HFSpec(arch="hf", config=config)


# what a student started from the teacher's layers must share with it: everything but depth
_SAME_WIDTH = ("model_type", "hidden_size", "num_attention_heads", "intermediate_size",
               "vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act")
_LAYER = re.compile(r"\.layer\.(\d+)\.")


def teacher_layers(student_depth: int, teacher_depth: int, layers: list[int] | None) -> list[int]:
    """The teacher layer each student layer starts from: `layers` as given, or every k-th
    from the first (k = teacher_depth // student_depth), as DistilBERT."""
    if layers is None:
        if student_depth > teacher_depth:
            raise ValueError(f"the student has {student_depth} layers, the teacher "
                             f"{teacher_depth}: each student layer needs a teacher layer")
        k = teacher_depth // student_depth
        return [i * k for i in range(student_depth)]
    if len(layers) != student_depth or max(layers) >= teacher_depth:
        raise ValueError(f"layers {layers}: one teacher layer (0 to {teacher_depth - 1}) for "
                         f"each of the student's {student_depth} layers")
    return list(layers)


def init_from_teacher(student: TextClassifier, teacher: TextClassifier,
                      layers: list[int] | None) -> list[int]:
    """Copy the teacher's embeddings, chosen encoder layers, pooler and head into `student`
    (DistilBERT-style); the teacher layers used. ValueError naming what differs when the two
    are not one architecture of different depths."""
    s, t = student.model.config, teacher.model.config
    differ = [f"{k} {getattr(s, k, None)!r} vs {getattr(t, k, None)!r}" for k in _SAME_WIDTH
              if getattr(s, k, None) != getattr(t, k, None)]
    if differ:
        raise ValueError(f"the student's config differs from the teacher's in {', '.join(differ)}"
                         "; a student started from the teacher keeps its width (give it the "
                         "teacher's config with fewer num_hidden_layers)")
    chosen = teacher_layers(s.num_hidden_layers, t.num_hidden_layers, layers)
    source = teacher.state_dict()
    state = {key: source[_LAYER.sub(lambda m: f".layer.{chosen[int(m.group(1))]}.", key)]
             for key in student.state_dict()}
    student.load_state_dict(state)
    return chosen
