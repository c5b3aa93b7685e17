"""Response-based KD: match the teacher's softened output distribution, plus the task loss.

Also each stage of a progressive (teacher-assistant, curriculum) run: the chain and the
curriculum's per-row weights are arranged around it by the pipeline and the trainer.
"""

from __future__ import annotations

import torch

from distillery.losses import kd_loss, task_loss
from distillery.strategies.base import Strategy


class ResponseStrategy(Strategy):
    needs = ("logits",)

    def __init__(self, temperature: float, alpha: float, kl: str = "forward"):
        self.temperature, self.kl = temperature, kl
        self.weights = {"kd": alpha, "task": 1.0 - alpha}

    def loss_terms(self, outputs: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = batch["weight"]
        return {
            "kd": kd_loss(outputs, batch["logits"], self.temperature, self.kl, w),
            "task": task_loss(outputs, batch["label"], w),
        }
