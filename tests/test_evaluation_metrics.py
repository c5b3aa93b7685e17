"""Evaluation metrics against hand-computed values and their identities (pure, no Ray)."""

import math

import numpy as np
import pytest

from distillery.evaluation import metrics as m
from distillery.evaluation.shifts import perturb


def probs_rows(*rows):
    return np.array(rows, dtype=float)


# ---------------------------------------------------------------- calibration

def test_ece_of_perfectly_calibrated_predictions_is_zero():
    # ten rows at confidence 0.7 of which seven are right: acc(B) = conf(B) = 0.7
    probs = probs_rows(*[[0.7, 0.3]] * 10)
    labels = np.array([0] * 7 + [1] * 3)
    assert m.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # certain and always right
    assert m.expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_ece_of_maximally_miscalibrated_predictions_is_one():
    # certain, and always wrong: one bin with conf 1 and acc 0
    probs = probs_rows([1.0, 0.0], [0.0, 1.0], [1.0, 0.0])
    assert m.expected_calibration_error(probs, np.array([1, 0, 1])) == 1.0


def test_ece_hand_computed():
    # bin 14 (0.8667, 0.9333]: 4 rows at 0.9, 3 right -> |0.75 - 0.9| = 0.15
    # bin 9 (0.5333, 0.6]: 2 rows at 0.55, none right -> 0.55
    # ECE = 4/6 * 0.15 + 2/6 * 0.55 = 0.28333...
    probs = probs_rows(*[[0.9, 0.1, 0.0]] * 4, *[[0.55, 0.45, 0.0]] * 2)
    labels = np.array([0, 0, 0, 1, 1, 2])
    assert m.expected_calibration_error(probs, labels) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.55)
    bins = m.reliability_bins(probs, labels)
    assert bins["count"].tolist() == [0] * 8 + [2, 0, 0, 0, 0, 4, 0]
    assert bins["accuracy"][13] == 0.75 and bins["confidence"][13] == pytest.approx(0.9)
    assert bins["accuracy"][8] == 0.0 and bins["confidence"][8] == pytest.approx(0.55)
    assert np.isnan(bins["accuracy"][0]) and np.isnan(bins["confidence"][14])
    assert bins["lower"][8] == pytest.approx(8 / 15) and bins["upper"][8] == pytest.approx(9 / 15)
    assert len(bins["lower"]) == m.ECE_BINS == 15


def test_ece_puts_confidence_one_in_the_last_bin_and_bins_are_right_closed():
    bins = m.reliability_bins(probs_rows([1.0, 0.0], [0.5, 0.5]), np.array([0, 0]), num_bins=2)
    assert bins["count"].tolist() == [1, 1]  # 0.5 is in (0, 0.5], 1.0 in (0.5, 1]


def test_nll_of_uniform_logits_is_log_of_classes():
    assert m.nll(np.zeros((3, 4)), np.array([0, 1, 3])) == pytest.approx(math.log(4))


def test_fitted_temperature_matches_the_closed_form():
    # logits (2, 0) on every row, 80% labelled 0: NLL is minimal where sigmoid(2 / T) = 0.8,
    # i.e. T = 2 / ln(4); after scaling, confidence 0.8 = accuracy 0.8 -> ECE 0
    logits = np.tile([2.0, 0.0], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    t = m.fit_temperature(logits, labels)
    assert t == pytest.approx(2 / math.log(4), rel=1e-4)
    assert m.expected_calibration_error(m.softmax(logits / t), labels) == pytest.approx(0, abs=1e-4)


# ---------------------------------------------------------------- fidelity

def test_kl_of_identical_logits_is_zero_and_shift_invariant():
    z = np.random.default_rng(0).normal(size=(5, 7))
    assert m.mean_kl(z, z) == pytest.approx(0.0, abs=1e-12)
    assert m.mean_kl(z, z + 3.0) == pytest.approx(0.0, abs=1e-12)


def test_kl_hand_computed_and_asymmetric():
    # p_t = (1/2, 1/2), p_s = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    teacher, student = np.array([[0.0, 0.0]]), np.array([[math.log(3), 0.0]])
    assert m.mean_kl(teacher, student) == pytest.approx(0.5 * math.log(4 / 3))
    # reversed: 3/4 ln(3/2) + 1/4 ln(1/2)
    assert m.mean_kl(student, teacher) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    # the mean over rows
    both = m.mean_kl(np.vstack([teacher, teacher]), np.vstack([student, teacher]))
    assert both == pytest.approx(0.25 * math.log(4 / 3))


def test_agreement_and_its_split_by_teacher_correctness():
    labels = np.array([0, 1, 2, 3, 0, 1])
    teacher = np.array([0, 1, 2, 0, 1, 1])  # right on rows 0, 1, 2, 5; wrong on 3, 4
    student = np.array([0, 1, 0, 0, 2, 2])  # agrees on rows 0, 1, 3
    assert m.agreement(teacher, student) == 0.5
    right, wrong = m.agreement_by_teacher_correctness(teacher, student, labels)
    assert right == 0.5 and wrong == 0.5  # 2 of 4 right rows, 1 of 2 wrong rows
    right, wrong = m.agreement_by_teacher_correctness(labels, labels, labels)
    assert right == 1.0 and math.isnan(wrong)  # a perfect teacher has no wrong rows


# ---------------------------------------------------------------- task quality

def test_accuracy_f1_per_class_and_confusion_hand_computed():
    labels, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert m.accuracy(pred, labels) == 0.75
    assert m.confusion_matrix(labels, pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    # F1_0 = 2*1 / (2 + 0 + 1) = 2/3, F1_1 = 2*2 / (4 + 1 + 0) = 4/5; class 2 never occurs
    assert m.macro_f1(labels, pred, 3) == pytest.approx((2 / 3 + 4 / 5) / 2)
    per_class = m.per_class_accuracy(labels, pred, 3)
    assert per_class[:2].tolist() == [0.5, 1.0] and np.isnan(per_class[2])


def test_macro_f1_counts_a_predicted_but_absent_class_as_zero():
    # class 2 is predicted once but never occurs: F1_2 = 0 enters the mean
    labels, pred = np.array([0, 1]), np.array([0, 2])
    assert m.macro_f1(labels, pred, 3) == pytest.approx((1 + 0 + 0) / 3)


def test_top_k_accuracy():
    logits = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    labels = np.array([1, 0])
    assert [m.top_k_accuracy(logits, labels, k) for k in (1, 2, 3)] == [0.0, 0.5, 1.0]
    assert m.top_k_accuracy(np.array([[1.0, 1.0, 0.0]]), np.array([1]), 1) == 1.0  # a tie


# ---------------------------------------------------------------- latency

def test_latency_percentiles_interpolate_linearly_between_order_statistics():
    # rank h = 1 + (n - 1) q / 100 over the sorted samples 1..5
    p = m.latency_percentiles(np.array([5.0, 1.0, 4.0, 2.0, 3.0]))
    assert p == pytest.approx({"p50": 3.0, "p95": 4.8, "p99": 4.96})
    assert m.latency_percentiles([0.25]) == {"p50": 0.25, "p95": 0.25, "p99": 0.25}
    assert m.latency_percentiles(np.arange(1, 101), (50, 90)) == pytest.approx(
        {"p50": 50.5, "p90": 90.1})


# ---------------------------------------------------------------- shifts

def test_generic_shifts_at_their_clean_value_are_the_identity():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    mean, std = x.mean(axis=0), x.std(axis=0)
    for kind, clean in (("gaussian_noise", 0.0), ("feature_dropout", 0.0), ("scaling", 1.0)):
        assert np.array_equal(perturb(kind, x, clean, mean, std, np.random.default_rng(1)), x)
    dropped = perturb("feature_dropout", x, 1.0, mean, std, np.random.default_rng(1))
    assert np.allclose(dropped, np.broadcast_to(mean, x.shape))
    noisy = perturb("gaussian_noise", np.zeros((20000, 2), np.float32), 0.5, mean[:2],
                    np.array([1.0, 4.0]), np.random.default_rng(1))
    assert noisy.std(axis=0) == pytest.approx([0.5, 2.0], rel=0.03)
