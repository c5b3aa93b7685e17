"""Response-based KD: match the teacher's softened output distribution, plus the task loss.

`KDParams` are what every distilling strategy takes; the others extend them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distillery.config import PipelineSpec
from distillery.losses import kd_loss, task_loss
from distillery.strategies.base import Strategy


@dataclass(frozen=True, kw_only=True)
class KDParams:
    temperature: float
    alpha: float
    """Weight of the KD term; 1 - alpha weighs the task term."""
    kl: str = "forward"

    @classmethod
    def from_spec(cls, spec: PipelineSpec, pipeline) -> KDParams:
        return cls(**kd_fields(spec))


def kd_fields(spec: PipelineSpec) -> dict:
    """The KD temperature, weight and divergence of `distill`, as KDParams' fields."""
    d = spec.distill
    return {"temperature": d.temperature, "alpha": d.alpha, "kl": d.kl}


class ResponseStrategy(Strategy):
    Params = KDParams
    needs = ("logits",)

    def __init__(self, params: KDParams):
        super().__init__(params)
        self.weights = {"kd": params.alpha, "task": 1.0 - params.alpha}

    def loss_terms(self, outputs: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p, w = self.params, batch["weight"]
        return {
            "kd": kd_loss(outputs, batch["logits"], p.temperature, p.kl, w),
            "task": task_loss(outputs, batch["label"], w),
        }
