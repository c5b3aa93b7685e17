import math

import pytest
import torch
import torch.nn.functional as F

from distillery.losses import kd_loss, task_loss, weighted_sum
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
    terms = strategy.loss_terms(s, {"logits": t, "label": labels})
    assert set(terms) == {"kd", "task"}
    total = weighted_sum(terms, strategy.weights)
    expected = 0.25 * kd_loss(s, t, 2.0) + 0.75 * task_loss(s, labels)
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid: \\['response', 'supervised'\\]"):
        build_strategy("nope")
