"""Distillation losses: pure functions on tensors.

Shapes: logits are (B, C) float; labels are (B,) int64 with -1 marking an unlabeled row;
`weight` is an optional (B,) float of per-example weights (a curriculum's), and every loss is a
weighted mean over the batch. Each loss returns a scalar that keeps the graph even when the
batch contributes nothing, so every worker runs the same backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward", "reverse", "jsd")


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """sum(w * v) / sum(w) over the batch (plain mean without weights); 0 with the graph kept
    when every weight is 0."""
    if weight is None:
        return values.mean()
    total = weight.sum()
    if total <= 0:
        return values.sum() * 0.0
    return (values * weight).sum() / total


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row divergence between the teacher's p and the student's q, from log-probs (B, C).

    forward: KL(p || q), mean-seeking (Hinton et al. 2015); reverse: KL(q || p), mode-seeking
    (as in MiniLLM, Gu et al. 2024); jsd: the Jensen-Shannon divergence
    0.5 KL(p || m) + 0.5 KL(q || m) with m = (p + q) / 2, bounded by log 2.
    """
    if kind == "forward":
        return (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    if kind == "reverse":
        return (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    if kind == "jsd":
        log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
        return 0.5 * ((log_p.exp() * (log_p - log_m)).sum(dim=-1)
                      + (log_q.exp() * (log_q - log_m)).sum(dim=-1))
    raise ValueError(f"unknown divergence {kind!r}; valid: {DIVERGENCES}")


def soft_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            kind: str = "forward", weight: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * D(softmax(z_t / T), softmax(z_s / T)), a weighted mean over the batch.

    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the T^2 factor
    keeps the gradient scale of the soft term independent of T.
    """
    return kd_loss_to(student_logits, soft_log_probs(teacher_logits, temperature), temperature,
                      kind, weight)


def kd_loss_to(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor,
               temperature: float, kind: str = "forward",
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """kd_loss against a target given as softened log-probs (B, C), e.g. a teacher mixture."""
    t = temperature
    per_row = divergence(teacher_log_probs, soft_log_probs(student_logits, t), kind)
    return weighted_mean(per_row, weight) * t * t


# Floor on the teacher's tail mass: it is 1 - sum of k stored (rounded) probabilities, so a true
# tail below the storage precision can come out as 0 or negative, and reverse KL against a
# zero-mass bucket that the student fills is infinite.
TAIL_FLOOR = 1e-6


def topk_kd_loss(student_logits: torch.Tensor, topk_ids: torch.Tensor,
                 topk_logprobs: torch.Tensor, temperature: float, kind: str = "forward",
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """kd_loss against a teacher known only by its top-k classes, with the tail mass kept.

    student_logits (B, C); topk_ids (B, k) int; topk_logprobs (B, k): the teacher's
    log softmax(z_t / T) over all C classes at those ids, taken before truncation, so
    sum_i exp(topk_logprobs_i) <= 1. Both distributions are coarsened to k + 1 buckets, the k
    ids and one tail bucket holding the rest:

        p~ = [p_1 .. p_k, max(1 - sum_i p_i, TAIL_FLOOR)]
        q~ = [q_1 .. q_k, sum_{j not in top-k} q_j]        q = softmax(z_s / T)

    and the loss is T^2 * D(p~, q~), a weighted mean over the batch. Coarsening never increases
    an f-divergence (forward, reverse KL and JSD are all f-divergences), so the loss rises to the
    full-vocabulary kd_loss as k grows and equals it at k = C, where there is no tail bucket.
    The teacher's log-probs are a target: no gradient reaches them.
    """
    t = temperature
    log_q = soft_log_probs(student_logits, t)
    ids = topk_ids.long()
    log_p_k = topk_logprobs.detach().float()
    log_q_k = log_q.gather(-1, ids)
    if ids.shape[-1] < log_q.shape[-1]:
        # the student's tail summed over its own log-probs, exact even when it is tiny
        # (1 - sum q_k would lose it to rounding)
        log_q_tail = log_q.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
        p_tail = (1.0 - log_p_k.exp().sum(-1, keepdim=True)).clamp_min(TAIL_FLOOR)
        log_p_k = torch.cat([log_p_k, p_tail.log()], dim=-1)
        log_q_k = torch.cat([log_q_k, log_q_tail], dim=-1)
    return weighted_mean(divergence(log_p_k, log_q_k, kind), weight) * t * t


def teacher_mixture(teacher_logits: list[torch.Tensor], temperature: float,
                    weights: torch.Tensor) -> torch.Tensor:
    """log sum_i w_i softmax(z_i / T): K teachers' softened distributions combined (B, C).

    `weights` is (K,) fixed weights, or (B, K) per-example weights; rows must sum to 1.
    """
    log_p = torch.stack([soft_log_probs(z, temperature) for z in teacher_logits], dim=-2)
    w = weights.to(log_p) if weights.dim() == 2 else weights.to(log_p).expand(
        log_p.shape[0], -1)
    return torch.logsumexp(log_p + w.clamp_min(1e-12).log().unsqueeze(-1), dim=-2)


def confidence_weights(teacher_logits: list[torch.Tensor]) -> torch.Tensor:
    """Per-example teacher weights (B, K) proportional to each teacher's top-1 probability, so a
    confident teacher counts more on that example (cf. Zhang et al. 2022, "Confidence-Aware
    Multi-Teacher Knowledge Distillation")."""
    conf = torch.stack([F.softmax(z.float(), dim=-1).amax(dim=-1) for z in teacher_logits],
                       dim=-1)
    return conf / conf.sum(dim=-1, keepdim=True)


def task_loss(student_logits: torch.Tensor, labels: torch.Tensor,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the labelled rows only (label >= 0); 0 when the batch has none."""
    labelled = (labels >= 0).to(student_logits.dtype)
    ce = F.cross_entropy(student_logits.float(), labels.clamp_min(0), reduction="none")
    w = labelled if weight is None else labelled * weight
    return weighted_mean(ce, w)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Distance between a projected student feature map and the teacher's, both (B, ...).

    mse: mean squared error per example (FitNets, Romero et al. 2015); cosine: 1 - cosine
    similarity of the flattened maps per example.
    """
    s, t = student.float().flatten(1), teacher.float().flatten(1)
    if kind == "mse":
        per_row = (s - t).pow(2).mean(dim=1)
    elif kind == "cosine":
        per_row = 1.0 - F.cosine_similarity(s, t, dim=1)
    else:
        raise ValueError(f"unknown feature loss {kind!r}; valid: ['cosine', 'mse']")
    return weighted_mean(per_row, weight)


def mutual_loss(peer_logits: list[torch.Tensor], temperature: float, kind: str = "forward",
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """Deep mutual learning (Zhang et al. 2018): each peer k matches every other peer j,
    sum_k mean_{j != k} kd_loss(z_k, stop_grad(z_j)). The others are targets, not learners, in
    peer k's term, so each peer is pulled toward the group and none is pulled back by itself.
    """
    k = len(peer_logits)
    total = peer_logits[0].sum() * 0.0
    for i, z_i in enumerate(peer_logits):
        for j, z_j in enumerate(peer_logits):
            if i != j:
                total = total + kd_loss(z_i, z_j.detach(), temperature, kind, weight) / (k - 1)
    return total


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_k weights[k] * terms[k]; a term without a weight is a configuration bug."""
    return sum(weights[name] * value for name, value in terms.items())
