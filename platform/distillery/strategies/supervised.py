"""Labels only: how the teacher and the label-only baseline are trained."""

from __future__ import annotations

import torch

from distillery.losses import task_loss
from distillery.strategies.base import Strategy


class SupervisedStrategy(Strategy):
    weights = {"task": 1.0}

    def loss_terms(self, outputs: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task": task_loss(outputs, batch["label"], batch["weight"])}
