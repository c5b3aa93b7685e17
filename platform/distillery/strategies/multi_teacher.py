"""Multi-teacher KD: the student matches a mixture of several teachers' softened outputs.

The batch carries `logits` (the pipeline's `teacher`) and `logits_1`, `logits_2`, ... (the
`multi_teacher.teachers`, in spec order), joined by row id from each teacher's cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distillery.config import PipelineSpec, TeacherSpec
from distillery.losses import confidence_weights, kd_loss_to, task_loss, teacher_mixture
from distillery.strategies.base import Strategy
from distillery.strategies.response import KDParams, kd_fields


def teacher_columns(num_teachers: int) -> tuple[str, ...]:
    return ("logits", *(f"logits_{i}" for i in range(1, num_teachers)))


@dataclass(frozen=True, kw_only=True)
class MultiTeacherParams(KDParams):
    num_teachers: int
    weighting: str
    teacher_weights: tuple[float, ...] | None = None
    """Fixed weights of the teachers, in batch column order; equal when None."""

    @classmethod
    def from_spec(cls, spec: PipelineSpec, pipeline) -> MultiTeacherParams:
        m = spec.distill.multi_teacher
        return cls(**kd_fields(spec), num_teachers=len(m.teachers) + 1, weighting=m.weighting,
                   teacher_weights=tuple(m.weights) if m.weights else None)


class MultiTeacherStrategy(Strategy):
    Params = MultiTeacherParams

    @staticmethod
    def teachers(spec: PipelineSpec) -> list[TeacherSpec]:
        return [spec.teacher, *spec.distill.multi_teacher.teachers]

    def __init__(self, params: MultiTeacherParams):
        super().__init__(params)
        self.needs = teacher_columns(params.num_teachers)
        fixed = params.teacher_weights or [1.0] * params.num_teachers
        self.fixed = torch.tensor(fixed, dtype=torch.float32) / sum(fixed)
        self.weights = {"kd": params.alpha, "task": 1.0 - params.alpha}

    def loss_terms(self, outputs: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p = self.params
        teachers = [batch[c] for c in self.needs]
        mix = confidence_weights(teachers) if p.weighting == "confidence" else self.fixed
        target = teacher_mixture(teachers, p.temperature, mix)
        w = batch["weight"]
        return {
            "kd": kd_loss_to(outputs, target, p.temperature, p.kl, w),
            "task": task_loss(outputs, batch["label"], w),
        }
