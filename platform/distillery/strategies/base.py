"""What every strategy shares with the pipeline (driver side) and with the trainer (workers).

Driver side, class methods the pipeline calls before and around training (`pipeline`: the
driver's stages.Pipeline): `Params.from_spec(spec, pipeline)` builds the strategy's frozen
parameters, which travel to the workers in the train loop config (TrainJob.strategy_params, as
a dict); `teachers` and `cache_layers` say what teacher-infer caches; `distill` trains and
exports the student of a run.

Worker side, an instance built from those parameters in each worker: the trainer wraps the
student with `wrap` (the module DeepSpeed trains), feeds each batch's forward output to
`loss_terms` (named terms, summed with `weights`), scores `predictions` on validation, and
exports `export(state)`: one state dict per model to keep, the student first.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from distillery.config import PipelineSpec, TeacherSpec


class Strategy:
    Params: ClassVar[type]
    """A frozen dataclass of what the strategy is built from."""
    needs: tuple[str, ...] = ()
    """Batch columns the loss reads besides `x`, `label` and `weight`."""
    weights: dict[str, float] = {}
    num_models = 1
    """Models trained together (and scored, and exported): the student, plus any peers."""

    # ------------------------------------------------------------ driver side

    @staticmethod
    def teachers(spec: PipelineSpec) -> list[TeacherSpec]:
        """The teachers whose outputs the loss reads, the pipeline's `teacher` first (its
        outputs are the batch's `logits`, the others' `logits_1`, ...): teacher-infer caches
        each, train-teacher trains each."""
        return [spec.teacher]

    @staticmethod
    def cache_layers(spec: PipelineSpec) -> list[str]:
        """Layers of the first teacher whose outputs its cache holds besides the logits."""
        return []

    @classmethod
    def distill(cls, pipeline, run_id: str, callbacks: list | None) -> dict:
        """Train the student of `run_id` on the teachers' cached outputs and export it; its
        card. `callbacks` go to the trainer's RunConfig."""
        spec = pipeline.spec
        params = cls.Params.from_spec(spec, pipeline)  # before the caches: it may refuse
        state = pipeline.train(spec.student.model, params, "student", pipeline.teacher_rows(),
                               (*pipeline.students, run_id), callbacks)[0]
        return pipeline.export_student(run_id, state, "student", spec.student.model,
                                       pipeline.teacher_parts())

    # ------------------------------------------------------------ worker side

    def __init__(self, params) -> None:
        self.params = params

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
