"""Feature-based KD (FitNets, Romero et al. 2015): intermediate student layers match the
teacher's, through a learned projection adapter per pair, on top of the response loss.

Forward hooks capture the mapped layers. The teacher's maps come from the cache (columns
`features.<teacher layer>`, flattened) or from a live teacher forward in each worker. Text
models (Hugging Face encoders) pair hidden states, (L, H) per row, projected on H, and
attention maps (TinyBERT, Jiao et al. 2020): a pair with `attention` compares the two
self-attention modules' probabilities averaged over heads, (L, L) per row, taken live.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distillery.config import PipelineSpec, SpecError
from distillery.losses import feature_loss, kd_loss, task_loss
from distillery.models import build_model, load_model
from distillery.storage import Store
from distillery.strategies.base import Strategy, substate
from distillery.strategies.response import KDParams, kd_fields


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def map_key(layer: str, attention: bool) -> str:
    """What a pair reads of a layer: its output (the layer's name) or its attention maps."""
    return f"{layer}:attention" if attention else layer


class Capture:
    """Forward hooks that keep the latest output of the named modules of `model` (the first
    element of a tuple output, as a transformer layer's hidden states), and of the modules in
    `attention`, their attention probabilities averaged over heads under `map_key(name,
    True)`."""

    def __init__(self, model: nn.Module, names: list[str], attention: list[str] = ()):
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        for name in names:
            modules[name].register_forward_hook(self._keep(name, False))
        for name in attention:
            modules[name].register_forward_hook(self._keep(name, True))
        if attention:
            eager_attention(model)

    def _keep(self, name: str, attention: bool):
        def hook(_module, _inputs, output):
            if attention:
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise ValueError(f"{name} returned no attention weights: pair an attention "
                                     "module (one that returns them)")
                self.outputs[map_key(name, True)] = weights.mean(dim=1)  # (B, L, L)
            else:
                self.outputs[name] = output[0] if isinstance(output, tuple) else output
        return hook


def eager_attention(model: nn.Module) -> None:
    """A Hugging Face model computes attention with fused kernels (sdpa), which give no
    weights; the eager implementation gives the same outputs and its weights."""
    for module in model.modules():
        if hasattr(module, "set_attn_implementation"):
            module.set_attn_implementation("eager")
            return


def output_shapes(model: nn.Module, names: list[str], num_features: int,
                  attention: list[str] = ()) -> dict[str, list]:
    """Per-row shape of each named module's output (and of the attention maps of the modules
    in `attention`, under map_key), by one forward of a zero row."""
    probe = Capture(model, names, attention)
    with torch.no_grad():
        model(torch.zeros(1, num_features))
    return {key: list(value.shape[1:]) for key, value in probe.outputs.items()}


def cache_column(teacher_layer: str) -> str:
    return f"features.{teacher_layer}"


class Adapter(nn.Module):
    """Projects a student map onto the teacher's shape: linear for vectors (D,), a 1x1 conv
    for channel maps (C, L) or (C, H, W), then adaptive average pooling when the lengths
    differ. A `sequence` map is a text model's (L, H), projected on its last dimension."""

    def __init__(self, student_shape: list[int], teacher_shape: list[int],
                 sequence: bool = False):
        super().__init__()
        self.size: tuple[int, ...] = ()
        if sequence:
            if (len(student_shape), len(teacher_shape)) != (2, 2) or (
                    student_shape[0] != teacher_shape[0]):
                raise ValueError(f"cannot project a {tuple(student_shape)} map onto "
                                 f"{tuple(teacher_shape)}: both must be (L, H) of one length L")
            self.proj = nn.Linear(student_shape[1], teacher_shape[1])
            return
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (1, 2, 3):
            raise ValueError(f"cannot project a {tuple(student_shape)} map onto "
                             f"{tuple(teacher_shape)}: both must be (D,), (C, L) or (C, H, W)")
        s, t = student_shape[0], teacher_shape[0]
        self.size = tuple(teacher_shape[1:])
        conv = {1: nn.Linear, 2: nn.Conv1d, 3: nn.Conv2d}[len(student_shape)]
        self.proj = conv(s, t) if conv is nn.Linear else conv(s, t, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        if self.size and y.shape[2:] != self.size:
            pool = F.adaptive_avg_pool1d if len(self.size) == 1 else F.adaptive_avg_pool2d
            y = pool(y, self.size)
        return y


def adapter(pair: dict, student_shapes: dict, teacher_shapes: dict,
            sequence: bool) -> nn.Module:
    """The pair's projection; attention maps are compared as they are, when of one shape."""
    student = student_shapes[map_key(pair["student"], pair["attention"])]
    teacher = teacher_shapes[map_key(pair["teacher"], pair["attention"])]
    if not pair["attention"]:
        return Adapter(student, teacher, sequence)
    if student != teacher:
        raise ValueError(f"attention maps {tuple(student)} and {tuple(teacher)} differ: both "
                         "models must read rows of one length")
    return nn.Identity()


def layers_of(pairs: list[dict], role: str) -> tuple[list[str], list[str]]:
    """(layers whose outputs, layers whose attention maps) the pairs read of `role`."""
    return (sorted({p[role] for p in pairs if not p["attention"]}),
            sorted({p[role] for p in pairs if p["attention"]}))


class FeatureDistiller(nn.Module):
    """The student plus one adapter per pair; forward gives (logits, projected maps)."""

    def __init__(self, student: nn.Module, pairs: list[dict], student_shapes: dict,
                 teacher_shapes: dict, sequence: bool):
        super().__init__()
        self.student = student
        self.pairs = pairs
        self.adapters = nn.ModuleList(
            [adapter(p, student_shapes, teacher_shapes, sequence) for p in pairs])
        self.capture = Capture(student, *layers_of(pairs, "student"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = self.student(x)
        captured = self.capture.outputs
        maps = [project(captured[map_key(pair["student"], pair["attention"])])
                for pair, project in zip(self.pairs, self.adapters, strict=True)]
        return logits, maps


@dataclass(frozen=True, kw_only=True)
class FeatureParams(KDParams):
    pairs: tuple[dict, ...]
    """FeaturePair fields of each pair: student, teacher, loss, weight, attention."""
    student_shapes: dict[str, list[int]]
    teacher_shapes: dict[str, list[int]]
    """Per-row shape of each paired map, by map_key."""
    sequence: bool = False
    """Text models: their output maps are (L, H) hidden states."""
    live_teacher: tuple[str, tuple[str, ...]] | None = None
    """(store root, teacher parts) to run the teacher in the worker; None reads the teacher's
    maps from the cache."""

    @classmethod
    def from_spec(cls, spec: PipelineSpec, pipeline) -> FeatureParams:
        """Pairs are checked here, before any Ray work: a SpecError naming the pair when a
        layer does not exist or no adapter can bridge the two."""
        f = spec.distill.feature
        student_shapes, teacher_shapes = pair_shapes(spec, pipeline)
        return cls(**kd_fields(spec), pairs=tuple(p.model_dump() for p in f.pairs),
                   student_shapes=student_shapes, teacher_shapes=teacher_shapes,
                   sequence=spec.reads_text, live_teacher=None if f.cache else (pipeline.store.root,
                                                      pipeline.teacher_parts()))


def pair_shapes(spec: PipelineSpec, pipeline) -> tuple[dict, dict]:
    """Output shapes of the paired student and teacher layers (the student built, the teacher
    loaded from the pipeline's store)."""
    splits = pipeline.splits
    models = {
        "student": build_model(spec.student.model, splits.num_features, splits.num_classes),
        "teacher": load_model(pipeline.store, pipeline.teacher_parts())[0],
    }
    shapes: dict[str, dict] = {"student": {}, "teacher": {}}
    for i, pair in enumerate(spec.distill.feature.pairs):
        for role, model in models.items():
            layer, names = getattr(pair, role), layer_names(model)
            if layer not in names:
                raise SpecError(f"distill.feature.pairs.{i}.{role}: no layer {layer!r} in "
                                f"the {role}; valid: {names}")
            read = ([], [layer]) if pair.attention else ([layer], [])
            try:
                shapes[role].update(output_shapes(model, read[0], splits.num_features, read[1]))
            except ValueError as err:  # an attention pair on a module without weights
                raise SpecError(f"distill.feature.pairs.{i}.{role}: {err}") from None
        try:
            adapter(pair.model_dump(), shapes["student"], shapes["teacher"], spec.reads_text)
        except ValueError as err:
            raise SpecError(f"distill.feature.pairs.{i}: {err}") from None
    return shapes["student"], shapes["teacher"]


class FeatureStrategy(Strategy):
    Params = FeatureParams

    @staticmethod
    def cache_layers(spec: PipelineSpec) -> list[str]:
        f = spec.distill.feature
        return [p.teacher for p in f.pairs] if f.cache else []

    def __init__(self, params: FeatureParams):
        super().__init__(params)
        self.teacher_layers = layers_of(list(params.pairs), "teacher")[0]  # cached: no attention
        self.needs = ("logits",) if params.live_teacher else (
            "logits", *(cache_column(layer) for layer in self.teacher_layers))
        self.live = None
        if params.live_teacher:
            root, parts = params.live_teacher
            self.live, _ = load_model(Store(root), tuple(parts))
            self.live.eval().requires_grad_(False)
            self.live_capture = Capture(self.live, *layers_of(list(params.pairs), "teacher"))
        self.weights = {"kd": params.alpha, "task": 1.0 - params.alpha,
                        **{self.term(i): p["weight"] for i, p in enumerate(params.pairs)}}

    @staticmethod
    def term(i: int) -> str:
        return f"feature{i}"

    def wrap(self, student: nn.Module) -> nn.Module:
        p = self.params
        return FeatureDistiller(student, list(p.pairs), p.student_shapes, p.teacher_shapes,
                                p.sequence)

    def teacher_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.live is None:
            return {layer: batch[cache_column(layer)].view(-1, *self.params.teacher_shapes[layer])
                    for layer in self.teacher_layers}
        self.live.to(batch["x"].device)
        with torch.no_grad():
            self.live(batch["x"].float())
        return dict(self.live_capture.outputs)

    def loss_terms(self, outputs, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, maps = outputs
        p, w = self.params, batch["weight"]
        teacher = self.teacher_maps(batch)
        terms = {
            "kd": kd_loss(logits, batch["logits"], p.temperature, p.kl, w),
            "task": task_loss(logits, batch["label"], w),
        }
        for i, (pair, projected) in enumerate(zip(p.pairs, maps, strict=True)):
            terms[self.term(i)] = feature_loss(
                projected, teacher[map_key(pair["teacher"], pair["attention"])], pair["loss"], w)
        return terms

    def predictions(self, outputs) -> list[torch.Tensor]:
        return [outputs[0]]

    def export(self, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [substate(state, "student.")]
