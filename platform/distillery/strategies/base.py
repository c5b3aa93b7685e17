"""What every strategy shares with the trainer.

The trainer wraps the student with `wrap` (the module DeepSpeed trains), feeds each batch's
forward output to `loss_terms` (named terms, summed with `weights`), scores `predictions` on
validation, and exports `export(state)`: one state dict per model to keep, the student first.
"""

from __future__ import annotations

import torch
from torch import nn


class Strategy:
    needs: tuple[str, ...] = ()
    """Batch columns the loss reads besides `x`, `label` and `weight`."""
    weights: dict[str, float] = {}
    num_models = 1
    """Models trained together (and scored, and exported): the student, plus any peers."""

    def wrap(self, student: nn.Module) -> nn.Module:
        return student

    def loss_terms(self, outputs, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predictions(self, outputs) -> list[torch.Tensor]:
        """Logits (B, C) of each model scored on validation, the student first."""
        return [outputs]

    def export(self, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [state]


def substate(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a wrapper's state dict under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
