"""Online distillation by deep mutual learning (Zhang et al. 2018): no pre-trained teacher.

K peers train together in one DeepSpeed engine; each takes the task loss on labelled rows and
a KD term toward the other peers' (detached) predictions on every row, unlabeled ones included.
Every peer is exported under peers/<k>/, and the best on validation of those with the
student's architecture is the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distillery.config import PipelineSpec, TeacherSpec, parse_model_spec
from distillery.data.sources import distill_row_count
from distillery.losses import mutual_loss, task_loss
from distillery.models import build_model
from distillery.strategies.base import Strategy, substate
from distillery.strategies.response import KDParams, kd_fields


@dataclass(frozen=True, kw_only=True)
class OnlineParams(KDParams):
    peers: tuple[dict, ...]
    """Model specs (dict form) of the peers besides the student."""
    num_features: int
    num_classes: int

    @classmethod
    def from_spec(cls, spec: PipelineSpec, pipeline) -> OnlineParams:
        splits = pipeline.splits
        peers = tuple(p.model_dump() for p in spec.distill.online.peers)
        return cls(**kd_fields(spec), peers=peers, num_features=splits.num_features,
                   num_classes=splits.num_classes)


class PeerGroup(nn.Module):
    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.peers = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # K x (B, C)
        return [peer(x) for peer in self.peers]


class OnlineStrategy(Strategy):
    Params = OnlineParams

    @staticmethod
    def teachers(spec: PipelineSpec) -> list[TeacherSpec]:
        return []

    @classmethod
    def distill(cls, pipeline, run_id: str, callbacks: list | None) -> dict:
        spec = pipeline.spec
        specs = [spec.student.model, *spec.distill.online.peers]
        params = cls.Params.from_spec(spec, pipeline)
        run = (*pipeline.students, run_id)
        source = pipeline.source
        num_rows = distill_row_count(source)
        # no teacher maps these rows, so an in-memory source's may stay one block
        states = pipeline.train(spec.student.model, params, "online",
                                source.distill_rows(block_rows=num_rows), run, callbacks,
                                num_rows=num_rows)
        val = []
        for k, (model_spec, state) in enumerate(zip(specs, states, strict=True)):
            card = pipeline.export_student(run_id, state, "peer", model_spec, None,
                                           (*run, "peers", str(k)))
            val.append(card["metrics"]["val_accuracy"])
        # a bigger peer may win on validation, but the student is what fits the budget
        best = max((k for k, s in enumerate(specs) if s == specs[0]), key=val.__getitem__)
        print(f"online: peer validation accuracies {[round(v, 4) for v in val]}; "
              f"peer {best} is the student (the best with the student's architecture)",
              flush=True)
        return pipeline.export_student(run_id, states[best], "student", specs[best], None)

    def __init__(self, params: OnlineParams):
        super().__init__(params)
        # built after the student from the same seeded generator: every peer starts elsewhere
        self.peers = [build_model(parse_model_spec(p), params.num_features, params.num_classes)
                      for p in params.peers]
        self.num_models = len(self.peers) + 1
        self.weights = {"mutual": params.alpha, "task": 1.0 - params.alpha}

    def wrap(self, student: nn.Module) -> nn.Module:
        return PeerGroup([student, *self.peers])

    def loss_terms(self, outputs: list[torch.Tensor],
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p, w = self.params, batch["weight"]
        return {
            "mutual": mutual_loss(outputs, p.temperature, p.kl, w),
            "task": sum(task_loss(z, batch["label"], w) for z in outputs),
        }

    def predictions(self, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return outputs

    def export(self, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [substate(state, f"peers.{k}.") for k in range(self.num_models)]
