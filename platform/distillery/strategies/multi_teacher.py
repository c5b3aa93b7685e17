"""Multi-teacher KD: the student matches a mixture of several teachers' softened outputs.

The batch carries `logits` (the pipeline's `teacher`) and `logits_1`, `logits_2`, ... (the
`multi_teacher.teachers`, in spec order), joined by row id from each teacher's cache.
"""

from __future__ import annotations

import torch

from distillery.losses import confidence_weights, kd_loss_to, task_loss, teacher_mixture
from distillery.strategies.base import Strategy


def teacher_columns(num_teachers: int) -> tuple[str, ...]:
    return ("logits", *(f"logits_{i}" for i in range(1, num_teachers)))


class MultiTeacherStrategy(Strategy):
    def __init__(self, temperature: float, alpha: float, kl: str, num_teachers: int,
                 weighting: str, teacher_weights: list[float] | None):
        self.temperature, self.kl, self.weighting = temperature, kl, weighting
        self.needs = teacher_columns(num_teachers)
        fixed = teacher_weights or [1.0] * num_teachers
        self.fixed = torch.tensor(fixed, dtype=torch.float32) / sum(fixed)
        self.weights = {"kd": alpha, "task": 1.0 - alpha}

    def loss_terms(self, outputs: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        teachers = [batch[c] for c in self.needs]
        mix = confidence_weights(teachers) if self.weighting == "confidence" else self.fixed
        target = teacher_mixture(teachers, self.temperature, mix)
        w = batch["weight"]
        return {
            "kd": kd_loss_to(outputs, target, self.temperature, self.kl, w),
            "task": task_loss(outputs, batch["label"], w),
        }
