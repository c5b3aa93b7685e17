import math

import pytest
import torch
import torch.nn.functional as F

from distillery.lm.token_losses import next_token_loss, token_kd_loss
from distillery.losses import DIVERGENCES, kd_loss, topk_kd_loss

# One token, V = 4: the teacher p sorted descending, the student q the other way round.
P = [0.4, 0.3, 0.2, 0.1]
Q = [0.1, 0.2, 0.3, 0.4]


def one_token(k: int, temperature: float = 1.0):
    """(student logits (1, 1, 4), top-k ids, top-k log-probs, mask) for P and Q at T: the
    student's logits are T log q, so softmax(z / T) = q."""
    student = (temperature * torch.tensor(Q).log()).view(1, 1, 4)
    ids = torch.arange(k, dtype=torch.int32).view(1, 1, k)
    logprobs = torch.tensor(P[:k]).log().view(1, 1, k)
    return student, ids, logprobs, torch.ones(1, 1, dtype=torch.bool)


def random_batch(seed: int, b: int = 2, length: int = 5, v: int = 11):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(b, length, v, generator=g)
    teacher = 2 * torch.randn(b, length, v, generator=g)
    mask = torch.rand(b, length, generator=g) > 0.3
    return student, teacher, mask


def teacher_topk_fp32(teacher: torch.Tensor, k: int, temperature: float):
    values, ids = F.log_softmax(teacher / temperature, dim=-1).topk(k, dim=-1)
    return ids, values


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_equals_full_vocabulary_kd_when_k_is_the_vocabulary(kind):
    student, teacher, mask = random_batch(0)
    ids, logprobs = teacher_topk_fp32(teacher, 11, 2.0)
    full = kd_loss(student[mask], teacher[mask], 2.0, kind)
    assert token_kd_loss(student, ids, logprobs, mask, 2.0, kind).item() == pytest.approx(
        full.item(), rel=1e-5)


def test_forward_kl_over_top_k_and_tail_matches_hand_computation():
    # k = 1: p~ = [.4, .6], q~ = [.1, .9]; k = 2: p~ = [.4, .3, .3], q~ = [.1, .2, .7];
    # k = 3 already splits the tail into its single id: the full KL.
    expected = {
        1: 0.4 * math.log(0.4 / 0.1) + 0.6 * math.log(0.6 / 0.9),
        2: 0.4 * math.log(0.4 / 0.1) + 0.3 * math.log(0.3 / 0.2) + 0.3 * math.log(0.3 / 0.7),
        3: sum(p * math.log(p / q) for p, q in zip(P, Q, strict=True)),
        4: sum(p * math.log(p / q) for p, q in zip(P, Q, strict=True)),
    }
    got = {k: token_kd_loss(*one_token(k), 1.0).item() for k in expected}
    assert got == pytest.approx(expected, abs=1e-6)
    # 0.3112 < 0.4220 < 0.4564 = 0.4564: rising to the full value
    assert [round(got[k], 4) for k in (1, 2, 3, 4)] == [0.3112, 0.4220, 0.4564, 0.4564]


def test_reverse_kl_over_top_k_and_tail_matches_hand_computation():
    expected = {
        1: 0.1 * math.log(0.1 / 0.4) + 0.9 * math.log(0.9 / 0.6),
        2: 0.1 * math.log(0.1 / 0.4) + 0.2 * math.log(0.2 / 0.3) + 0.7 * math.log(0.7 / 0.3),
        4: sum(q * math.log(q / p) for p, q in zip(P, Q, strict=True)),
    }
    got = {k: token_kd_loss(*one_token(k), 1.0, "reverse").item() for k in expected}
    assert got == pytest.approx(expected, abs=1e-6)
    assert [round(got[k], 4) for k in (1, 2, 4)] == [0.2263, 0.3734, 0.4564]


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_rises_monotonically_to_the_full_value_as_k_grows(kind):
    # Coarsening never increases an f-divergence, and top-(k+1) refines top-k's buckets. The
    # teacher's tail is 1 - sum of k float32 probabilities, good to ~1e-7: a teacher soft enough
    # that no tail before k = V nears that keeps the comparison about the loss, not rounding.
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(1, 4, 50, generator=g), torch.randn(1, 4, 50, generator=g)
    mask = torch.ones(1, 4, dtype=torch.bool)
    full = kd_loss(student[0], teacher[0], 1.5, kind).item()
    values = [token_kd_loss(student, *teacher_topk_fp32(teacher, k, 1.5), mask, 1.5,
                            kind).item() for k in range(1, 51)]
    assert all(b >= a - 1e-6 for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] == pytest.approx(full, rel=1e-5)
    assert values[0] < 0.9 * full  # a real gap at k = 1, closed by k = V


def test_scales_by_t_squared():
    # the same p~ and q~ at T = 2 (student logits 2 log q) cost 4 times as much
    assert token_kd_loss(*one_token(1, 2.0), 2.0).item() == pytest.approx(
        4 * (0.4 * math.log(4) + 0.6 * math.log(0.6 / 0.9)), abs=1e-6)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_is_zero_when_the_student_is_the_teacher(kind):
    student, _, mask = random_batch(4)
    ids, logprobs = teacher_topk_fp32(student, 3, 2.0)
    assert token_kd_loss(student, ids, logprobs, mask, 2.0, kind).item() == pytest.approx(
        0.0, abs=1e-6)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_padding_positions_contribute_nothing(kind):
    student, teacher, mask = random_batch(5)
    ids, logprobs = teacher_topk_fp32(teacher, 4, 2.0)
    reference = token_kd_loss(student, ids, logprobs, mask, 2.0, kind)
    # garbage where the mask is off: other logits, NaN log-probs, other ids
    pad = ~mask
    student = student.clone()
    student[pad] = 100 * torch.randn(int(pad.sum()), 11)
    logprobs, ids = logprobs.clone(), ids.clone()
    logprobs[pad], ids[pad] = float("nan"), 0
    student.requires_grad_(True)
    loss = token_kd_loss(student, ids, logprobs, mask, 2.0, kind)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(student.grad[pad]) == 0
    assert torch.count_nonzero(student.grad[mask].abs().sum(-1)) == int(mask.sum())
    # a mean over the unmasked tokens: the average of each token's loss alone
    singles = []
    for b, t in mask.nonzero().tolist():
        alone = torch.zeros_like(mask)
        alone[b, t] = True
        singles.append(token_kd_loss(student, ids, logprobs, alone, 2.0, kind).item())
    assert loss.item() == pytest.approx(sum(singles) / len(singles), rel=1e-5)


def test_gradient_reaches_only_the_student():
    student, teacher, mask = random_batch(6)
    ids, logprobs = teacher_topk_fp32(teacher, 4, 2.0)
    student.requires_grad_(True)
    logprobs.requires_grad_(True)
    token_kd_loss(student, ids, logprobs, mask, 2.0).backward()
    assert logprobs.grad is None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_reverse_kl_stays_finite_when_rounding_leaves_no_teacher_tail():
    # stored log-probs that sum past 1 (rounding) leave the tail at TAIL_FLOOR, not 0
    student = torch.zeros(1, 1, 4)
    logprobs = torch.tensor([[[math.log(0.6), math.log(0.45)]]])
    ids = torch.tensor([[[0, 1]]])
    loss = token_kd_loss(student, ids, logprobs, torch.ones(1, 1), 1.0, "reverse")
    assert math.isfinite(loss.item())


def test_all_padding_gives_zero_and_keeps_the_graph():
    values = torch.randn(2, 3, 5)
    values[0, 0, 0], values[1, 2, 4] = float("nan"), float("inf")  # padding holds anything
    student = values.requires_grad_()
    ids, logprobs = teacher_topk_fp32(torch.randn(2, 3, 5), 2, 1.0)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for loss in (token_kd_loss(student, ids, logprobs, mask, 1.0),
                 next_token_loss(student, torch.zeros(2, 3, dtype=torch.long), mask)):
        assert loss.item() == 0.0
        loss.backward()
    assert torch.count_nonzero(student.grad) == 0


def test_topk_kd_loss_on_rows_weights_like_kd_loss():
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(6, 9, generator=g), torch.randn(6, 9, generator=g)
    w = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 0.0])
    ids, logprobs = teacher_topk_fp32(t, 9, 3.0)
    assert topk_kd_loss(s, ids, logprobs, 3.0, weight=w).item() == pytest.approx(
        kd_loss(s, t, 3.0, weight=w).item(), rel=1e-5)


def test_next_token_loss_of_uniform_logits_is_log_vocabulary():
    logits = torch.zeros(2, 3, 7)
    labels = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert next_token_loss(logits, labels, torch.ones(2, 3)).item() == pytest.approx(
        math.log(7), abs=1e-6)


def test_next_token_loss_averages_unmasked_tokens_and_ignores_padding_labels():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 4, 6, generator=g)
    labels = torch.tensor([[0, 5, 2, -100], [3, 1, 99, 4]])  # invalid labels only in padding
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 1]])
    keep = mask.bool()
    expected = F.cross_entropy(logits[keep], labels[keep])
    assert next_token_loss(logits, labels, mask).item() == pytest.approx(expected.item(),
                                                                          abs=1e-6)
