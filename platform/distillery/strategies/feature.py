"""Feature-based KD (FitNets, Romero et al. 2015): intermediate student layers match the
teacher's, through a learned projection adapter per pair, on top of the response loss.

Forward hooks capture the mapped layers. The teacher's maps come from the cache (columns
`features.<teacher layer>`, flattened) or from a live teacher forward in each worker.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distillery.losses import feature_loss, kd_loss, task_loss
from distillery.models import load_model
from distillery.storage import Store
from distillery.strategies.base import Strategy, substate


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


class Capture:
    """Forward hooks that keep the latest output of the named modules of `model`."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        for name in names:
            modules[name].register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(_module, _inputs, output):
            self.outputs[name] = output
        return hook


def output_shapes(model: nn.Module, names: list[str], num_features: int) -> dict[str, list]:
    """Per-row output shape of each named module, by one forward of a zero row."""
    probe = Capture(model, names)
    with torch.no_grad():
        model(torch.zeros(1, num_features))
    return {name: list(probe.outputs[name].shape[1:]) for name in names}


def cache_column(teacher_layer: str) -> str:
    return f"features.{teacher_layer}"


class Adapter(nn.Module):
    """Projects a student map onto the teacher's shape: linear for vectors (D,), a 1x1 conv
    for channel maps (C, L) or (C, H, W), then adaptive average pooling when the lengths
    differ."""

    def __init__(self, student_shape: list[int], teacher_shape: list[int]):
        super().__init__()
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (1, 2, 3):
            raise ValueError(f"cannot project a {tuple(student_shape)} map onto "
                             f"{tuple(teacher_shape)}: both must be (D,), (C, L) or (C, H, W)")
        s, t = student_shape[0], teacher_shape[0]
        self.size = tuple(teacher_shape[1:])
        conv = {1: nn.Linear, 2: nn.Conv1d, 3: nn.Conv2d}[len(student_shape)]
        self.proj = conv(s, t) if conv is nn.Linear else conv(s, t, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        if y.shape[2:] != self.size:
            pool = F.adaptive_avg_pool1d if len(self.size) == 1 else F.adaptive_avg_pool2d
            y = pool(y, self.size)
        return y


class FeatureDistiller(nn.Module):
    """The student plus one adapter per pair; forward gives (logits, projected maps)."""

    def __init__(self, student: nn.Module, pairs: list[dict], student_shapes: dict,
                 teacher_shapes: dict):
        super().__init__()
        self.student = student
        self.pairs = pairs
        self.adapters = nn.ModuleList(
            [Adapter(student_shapes[p["student"]], teacher_shapes[p["teacher"]]) for p in pairs])
        self.capture = Capture(student, sorted({p["student"] for p in pairs}))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = self.student(x)
        captured = self.capture.outputs
        maps = [adapter(captured[pair["student"]])
                for pair, adapter in zip(self.pairs, self.adapters, strict=True)]
        return logits, maps


class FeatureStrategy(Strategy):
    def __init__(self, temperature: float, alpha: float, kl: str, pairs: list[dict],
                 student_shapes: dict, teacher_shapes: dict,
                 live_teacher: tuple[str, list[str]] | None = None):
        """`live_teacher`: (store root, teacher parts) to run the teacher in the worker; None
        reads the teacher's maps from the cache."""
        self.temperature, self.kl, self.pairs = temperature, kl, pairs
        self.student_shapes, self.teacher_shapes = student_shapes, teacher_shapes
        self.teacher_layers = sorted({p["teacher"] for p in pairs})
        self.needs = ("logits",) if live_teacher else (
            "logits", *(cache_column(layer) for layer in self.teacher_layers))
        self.live = None
        if live_teacher:
            root, parts = live_teacher
            self.live, _ = load_model(Store(root), tuple(parts))
            self.live.eval().requires_grad_(False)
            self.live_capture = Capture(self.live, self.teacher_layers)
        self.weights = {"kd": alpha, "task": 1.0 - alpha,
                        **{self.term(i): p["weight"] for i, p in enumerate(pairs)}}

    @staticmethod
    def term(i: int) -> str:
        return f"feature{i}"

    def wrap(self, student: nn.Module) -> nn.Module:
        return FeatureDistiller(student, self.pairs, self.student_shapes, self.teacher_shapes)

    def teacher_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.live is None:
            return {layer: batch[cache_column(layer)].view(-1, *self.teacher_shapes[layer])
                    for layer in self.teacher_layers}
        self.live.to(batch["x"].device)
        with torch.no_grad():
            self.live(batch["x"].float())
        return dict(self.live_capture.outputs)

    def loss_terms(self, outputs, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, maps = outputs
        w = batch["weight"]
        teacher = self.teacher_maps(batch)
        terms = {
            "kd": kd_loss(logits, batch["logits"], self.temperature, self.kl, w),
            "task": task_loss(logits, batch["label"], w),
        }
        for i, (pair, projected) in enumerate(zip(self.pairs, maps, strict=True)):
            terms[self.term(i)] = feature_loss(projected, teacher[pair["teacher"]],
                                               pair["loss"], w)
        return terms

    def predictions(self, outputs) -> list[torch.Tensor]:
        return [outputs[0]]

    def export(self, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [substate(state, "student.")]
