"""Online distillation by deep mutual learning (Zhang et al. 2018): no pre-trained teacher.

K peers train together in one DeepSpeed engine; each takes the task loss on labelled rows and
a KD term toward the other peers' (detached) predictions on every row, unlabeled ones included.
"""

from __future__ import annotations

import torch
from torch import nn

from distillery.config import parse_model_spec
from distillery.losses import mutual_loss, task_loss
from distillery.models import build_model
from distillery.strategies.base import Strategy, substate


class PeerGroup(nn.Module):
    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.peers = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # K x (B, C)
        return [peer(x) for peer in self.peers]


class OnlineStrategy(Strategy):
    def __init__(self, temperature: float, alpha: float, kl: str, peers: list[dict],
                 num_features: int, num_classes: int):
        """`peers`: model specs (dict form) of the peers besides the student."""
        self.temperature, self.kl = temperature, kl
        # built after the student from the same seeded generator: every peer starts elsewhere
        self.peers = [build_model(parse_model_spec(p), num_features, num_classes) for p in peers]
        self.num_models = len(self.peers) + 1
        self.weights = {"mutual": alpha, "task": 1.0 - alpha}

    def wrap(self, student: nn.Module) -> nn.Module:
        return PeerGroup([student, *self.peers])

    def loss_terms(self, outputs: list[torch.Tensor],
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = batch["weight"]
        return {
            "mutual": mutual_loss(outputs, self.temperature, self.kl, w),
            "task": sum(task_loss(z, batch["label"], w) for z in outputs),
        }

    def predictions(self, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return outputs

    def export(self, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [substate(state, f"peers.{k}.") for k in range(self.num_models)]
