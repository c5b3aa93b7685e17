"""Labels only: how the teacher and the label-only baseline are trained."""

from __future__ import annotations

import torch

from distillery.losses import task_loss


class SupervisedStrategy:
    needs = ()
    weights = {"task": 1.0}

    def loss_terms(self, student_logits: torch.Tensor,
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task": task_loss(student_logits, batch["label"])}
