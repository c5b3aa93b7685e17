"""Labels only: how the teacher and the label-only baseline are trained."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distillery.losses import task_loss
from distillery.strategies.base import Strategy


@dataclass(frozen=True)
class SupervisedParams:
    """None: the task loss has no settings."""


class SupervisedStrategy(Strategy):
    Params = SupervisedParams
    weights = {"task": 1.0}

    def loss_terms(self, outputs: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task": task_loss(outputs, batch["label"], batch["weight"])}
