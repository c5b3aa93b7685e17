"""Distillation losses: pure functions on tensors.

Shapes: logits are (B, C) float; labels are (B,) int64 with -1 marking an unlabeled row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch.

    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the T^2 factor
    keeps the gradient scale of the soft term independent of T.
    """
    t = temperature
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)  # (B,)
    return kl.mean() * t * t


def task_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled rows only (label >= 0); 0 when the batch has none.

    The zero keeps the graph (logits * 0) so every worker runs the same backward.
    """
    labelled = labels >= 0
    if not labelled.any():
        return student_logits.sum() * 0.0
    return F.cross_entropy(student_logits[labelled].float(), labels[labelled])


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_k weights[k] * terms[k]; a term without a weight is a configuration bug."""
    return sum(weights[name] * value for name, value in terms.items())
