"""Token-level losses for causal LMs: pure functions on (B, L, ...) tensors.

Position t of every tensor is about the token at t + 1: student_logits[:, t] and the teacher's
top-k at t are both distributions over it, and labels[:, t] is it (see text_data.shift_block).
`mask` (B, L) is True (or 1) where a position counts; padding positions are dropped before any
arithmetic, so whatever they hold (even NaN) contributes no value and no gradient. Each loss is
a mean over the unmasked positions, and 0 with the graph kept when there are none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillery.losses import topk_kd_loss


def token_kd_loss(student_logits: torch.Tensor, topk_ids: torch.Tensor,
                  topk_logprobs: torch.Tensor, mask: torch.Tensor, temperature: float,
                  kind: str = "forward") -> torch.Tensor:
    """T^2 * mean over unmasked tokens of D(p~, q~), the top-k divergence with a tail bucket
    (losses.topk_kd_loss; Hinton et al. 2015 for T^2, Gu et al. 2024 for reverse KL on LMs).

    student_logits (B, L, V); topk_ids (B, L, k) int; topk_logprobs (B, L, k): the teacher's
    log softmax(z_t / T) over the full vocabulary at those ids; mask (B, L).
    """
    keep = mask.bool()
    if not keep.any():
        return student_logits[keep].sum()  # 0, graph kept; padded values never read
    return topk_kd_loss(student_logits[keep], topk_ids[keep], topk_logprobs[keep], temperature,
                        kind)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """Mean over unmasked tokens of -log softmax(logits[b, t])[labels[b, t]], in nats.

    logits (B, L, V); labels (B, L) int, already shifted (labels[:, t] = input_ids[:, t + 1]);
    mask (B, L). exp of it is the perplexity.
    """
    keep = mask.bool()
    if not keep.any():
        return logits[keep].sum()  # 0, graph kept; padded values never read
    return F.cross_entropy(logits[keep].float(), labels[keep].long())
