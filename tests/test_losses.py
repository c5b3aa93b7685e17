import math

import pytest
import torch
import torch.nn.functional as F

from distillery.losses import (
    confidence_weights,
    divergence,
    feature_loss,
    kd_loss,
    kd_loss_to,
    mutual_loss,
    task_loss,
    teacher_mixture,
    weighted_sum,
)
from distillery.strategies import build_strategy


def test_kd_loss_matches_hand_computation():
    # teacher p = [3/4, 1/4] (logits ln 3, 0); student uniform; T = 1
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(expected, abs=1e-6)


def test_kd_loss_softens_by_temperature_and_scales_by_t_squared():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    # at T = 2 the teacher's logits halve: p = [sqrt3, 1] / (sqrt3 + 1)
    p = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]
    kl = sum(pi * math.log(pi / 0.5) for pi in p)
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(4 * kl, abs=1e-6)


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    assert kd_loss(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, logits.flip(0), 3.0).item() > 0


def test_kd_loss_equals_torch_kl_div_times_t_squared():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    T = 4.0
    ref = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                   reduction="batchmean") * T * T
    assert kd_loss(s, t, T).item() == pytest.approx(ref.item(), rel=1e-5)


def test_kd_loss_at_high_temperature_reduces_to_logit_matching():
    # Hinton et al. 2015: as T -> inf, T^2 KL -> 1/(2C) * sum((d - mean d)^2), d = z_t - z_s
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    d = t - s
    limit = ((d - d.mean(-1, keepdim=True)) ** 2).sum(-1).mean() / (2 * 6)
    assert kd_loss(s, t, 1000.0).item() == pytest.approx(limit.item(), rel=1e-2)


def test_task_loss_ignores_unlabeled_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    labels = torch.tensor([0, -1, 1])
    expected = (F.cross_entropy(logits[[0]], labels[[0]]) +
                F.cross_entropy(logits[[2]], labels[[2]])) / 2
    assert task_loss(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_task_loss_of_an_unlabeled_batch_is_zero_and_keeps_the_graph():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = task_loss(logits, torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_response_strategy_weights_terms_by_alpha():
    strategy = build_strategy("response", temperature=2.0, alpha=0.25)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 1, -1, 2, -1])
    terms = strategy.loss_terms(s, {"logits": t, "label": labels, "weight": torch.ones(5)})
    assert set(terms) == {"kd", "task"}
    total = weighted_sum(terms, strategy.weights)
    expected = 0.25 * kd_loss(s, t, 2.0) + 0.75 * task_loss(s, labels)
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid: \\['feature', 'multi_teacher', 'online', "
                       "'progressive', 'response', 'supervised'\\]"):
        build_strategy("nope")


# ---------------------------------------------------------------- divergences

P = torch.tensor([[0.75, 0.25]]).log()
Q = torch.tensor([[0.5, 0.5]]).log()


def test_forward_and_reverse_kl_match_hand_computation():
    forward = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert divergence(P, Q, "forward").item() == pytest.approx(forward, abs=1e-6)
    assert divergence(P, Q, "reverse").item() == pytest.approx(reverse, abs=1e-6)


def test_jsd_matches_hand_computation_is_symmetric_and_bounded_by_log2():
    m = [0.625, 0.375]
    expected = 0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])) + \
        0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1]))
    assert divergence(P, Q, "jsd").item() == pytest.approx(expected, abs=1e-6)
    assert divergence(Q, P, "jsd").item() == pytest.approx(expected, abs=1e-6)
    disjoint = torch.tensor([[1.0, 1e-30], [1e-30, 1.0]]).log()
    assert divergence(disjoint[:1], disjoint[1:], "jsd").item() == pytest.approx(
        math.log(2), abs=1e-6)


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_every_divergence_is_zero_on_identical_inputs(kind):
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    assert kd_loss(logits, logits, 2.0, kind).item() == pytest.approx(0.0, abs=1e-6)


def test_reverse_kd_is_forward_kd_with_roles_swapped():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    assert kd_loss(s, t, 3.0, "reverse").item() == pytest.approx(
        kd_loss(t, s, 3.0, "forward").item(), rel=1e-5)


def test_weighted_kd_is_the_weighted_mean_of_per_row_losses():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    rows = [kd_loss(s[i:i + 1], t[i:i + 1], 2.0).item() for i in range(3)]
    w = torch.tensor([1.0, 0.0, 3.0])
    assert kd_loss(s, t, 2.0, weight=w).item() == pytest.approx(
        (rows[0] + 3 * rows[2]) / 4, rel=1e-5)


def test_all_zero_weights_give_zero_loss_with_the_graph_kept():
    s = torch.randn(2, 3, requires_grad=True)
    loss = kd_loss(s, torch.randn(2, 3), 2.0, weight=torch.zeros(2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(s.grad) == 0


def test_task_loss_weights_combine_with_the_label_mask():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    labels = torch.tensor([0, -1, 1])
    w = torch.tensor([0.0, 1.0, 1.0])  # row 0 weighed out, row 1 unlabeled
    expected = F.cross_entropy(logits[[2]], labels[[2]])
    assert task_loss(logits, labels, w).item() == pytest.approx(expected.item(), abs=1e-6)


# ---------------------------------------------------------------- multi-teacher

def test_teacher_mixture_of_fixed_weights_is_the_weighted_average_distribution():
    z1 = torch.tensor([[math.log(3.0), 0.0]])  # p = [3/4, 1/4]
    z2 = torch.tensor([[0.0, 0.0]])  # p = [1/2, 1/2]
    mix = teacher_mixture([z1, z2], 1.0, torch.tensor([0.5, 0.5])).exp()
    assert mix.tolist()[0] == pytest.approx([0.625, 0.375], abs=1e-6)


def test_mixture_of_one_teacher_is_plain_kd():
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    target = teacher_mixture([t], 3.0, torch.tensor([1.0]))
    assert kd_loss_to(s, target, 3.0).item() == pytest.approx(kd_loss(s, t, 3.0).item(),
                                                              rel=1e-5)


def test_confidence_weights_follow_each_teachers_top1_probability():
    z1 = torch.tensor([[math.log(3.0), 0.0]])  # top-1 prob 3/4
    z2 = torch.tensor([[0.0, 0.0]])  # top-1 prob 1/2
    w = confidence_weights([z1, z2])
    assert w.tolist()[0] == pytest.approx([0.6, 0.4], abs=1e-6)


# ---------------------------------------------------------------- feature and mutual

def test_feature_losses_match_hand_computation():
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, C=2, L=2)
    t = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    assert feature_loss(s, t, "mse").item() == pytest.approx((4 + 16) / 4)
    cos = (1 + 9) / (math.sqrt(30) * math.sqrt(10))
    assert feature_loss(s, t, "cosine").item() == pytest.approx(1 - cos, abs=1e-6)
    assert feature_loss(t, t, "cosine").item() == pytest.approx(0.0, abs=1e-6)


def test_mutual_loss_of_two_peers_is_symmetric_and_each_peer_learns_only_from_the_other():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(4, 5, generator=g, requires_grad=True)
    b = torch.randn(4, 5, generator=g, requires_grad=True)
    loss = mutual_loss([a, b], 2.0)
    expected = kd_loss(a, b.detach(), 2.0) + kd_loss(b, a.detach(), 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert mutual_loss([b, a], 2.0).item() == pytest.approx(loss.item(), rel=1e-6)
    # peer a's gradient comes from its own term only (b is its detached target)
    mutual_loss([a, b], 2.0).backward()
    own = torch.autograd.grad(kd_loss(a, b.detach(), 2.0), a)[0]
    assert torch.allclose(a.grad, own, atol=1e-6)


def test_mutual_loss_of_identical_peers_is_zero():
    z = torch.randn(3, 4)
    assert mutual_loss([z, z.clone(), z.clone()], 1.0).item() == pytest.approx(0.0, abs=1e-6)
