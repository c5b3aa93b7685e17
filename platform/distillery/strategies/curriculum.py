"""Curriculum by teacher difficulty: easy rows first, more of them each epoch.

The driver ranks rows by a difficulty score of the teacher's output and turns the pacing
function into one score threshold per epoch; workers weight a row 1 when its score is at most
the epoch's threshold, else 0. Weights, not filtering: every rank keeps the same number of
steps, which the gradient all-reduce requires.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def difficulty(teacher_logits: torch.Tensor, labels: torch.Tensor, score: str) -> torch.Tensor:
    """(B,) difficulty of each row by the teacher: entropy H(softmax(z)) in nats, or, for
    score="loss", the teacher's cross-entropy on the label (entropy where there is none)."""
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)
    if score == "entropy":
        return entropy
    loss = -log_p.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return torch.where(labels >= 0, loss, entropy)


def pacing_fraction(epoch: int, epochs: int, pacing: str, start: float, full_at: float) -> float:
    """Share of the easiest rows in play at `epoch` (0-based) of `epochs`.

    Grows from `start` at epoch 0 to 1 at epoch ceil(full_at * epochs) - 1 and stays there:
    linear, root (sqrt: fast early growth) or step (start, then everything at full_at).
    """
    last = max(math.ceil(full_at * epochs) - 1, 0)
    if epoch >= last:
        return 1.0
    progress = epoch / last
    if pacing == "linear":
        return start + (1.0 - start) * progress
    if pacing == "root":
        return math.sqrt(start ** 2 + (1.0 - start ** 2) * progress)
    if pacing == "step":
        return start
    raise ValueError(f"unknown pacing {pacing!r}; valid: ['linear', 'root', 'step']")


def thresholds(scores: np.ndarray, fractions: list[float]) -> list[float]:
    """Per-epoch score thresholds: the smallest score at or below which a `fraction` share of
    all rows' scores lies (inf at 1, so every row passes however the scores tie)."""
    return [math.inf if f >= 1.0 else float(np.quantile(scores, f, method="inverted_cdf"))
            for f in fractions]


def curriculum_weight(teacher_logits: torch.Tensor, labels: torch.Tensor, score: str,
                      threshold: float) -> torch.Tensor:
    """(B,) 1.0 for rows at most as hard as the epoch's threshold, else 0.0."""
    return (difficulty(teacher_logits, labels, score) <= threshold).float()
