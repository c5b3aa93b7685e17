"""Response-based KD: match the teacher's softened output distribution, plus the task loss."""

from __future__ import annotations

import torch

from distillery.losses import kd_loss, task_loss


class ResponseStrategy:
    needs = ("logits",)

    def __init__(self, temperature: float, alpha: float):
        self.temperature = temperature
        self.weights = {"kd": alpha, "task": 1.0 - alpha}

    def loss_terms(self, student_logits: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "kd": kd_loss(student_logits, batch["logits"], self.temperature),
            "task": task_loss(student_logits, batch["label"]),
        }
