"""Evaluation metrics: pure numpy functions of logits, probabilities, labels and timings.

Shapes: `logits`/`probs` (N, C), `labels`/`pred` (N,) int. Nothing here touches models or Ray,
so every number in a report can be re-derived from the arrays alone.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

ECE_BINS = 15
"""Guo et al. (2017), "On Calibration of Modern Neural Networks", use M = 15 bins."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, shifted by the row max so exp never overflows."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


# ---------------------------------------------------------------- task quality

def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels))


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def macro_f1(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean over classes of F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c).

    The mean runs over the classes that occur in `labels` or `pred` (scikit-learn's default
    label set): a class nobody has and nobody predicts has no F1 to average.
    """
    cm = confusion_matrix(labels, pred, num_classes)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    return float(np.mean(2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])))


def per_class_accuracy(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) recall of each class, TP_c / N_c; NaN for a class without rows."""
    cm = confusion_matrix(labels, pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k largest logits: fewer than k classes have a
    strictly larger logit than the label's (so ties resolve in the label's favour)."""
    label_logit = logits[np.arange(len(labels)), labels]
    rank = (logits > label_logit[:, None]).sum(axis=1)  # classes strictly ahead of the label
    return float(np.mean(rank < k))


# ---------------------------------------------------------------- fidelity to the teacher

def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Top-1 agreement: share of rows where both predict the same class."""
    return float(np.mean(pred_a == pred_b))


def agreement_by_teacher_correctness(teacher_pred: np.ndarray, student_pred: np.ndarray,
                                     labels: np.ndarray) -> tuple[float, float]:
    """(agreement on rows the teacher gets right, agreement on rows it gets wrong); NaN where
    there are no such rows. High agreement on the wrong rows means the student copies the
    teacher's mistakes rather than the task."""
    right = teacher_pred == labels
    same = teacher_pred == student_pred
    return (float(np.mean(same[right])) if right.any() else float("nan"),
            float(np.mean(same[~right])) if (~right).any() else float("nan"))


def mean_kl(teacher_logits: np.ndarray, student_logits: np.ndarray) -> float:
    """Mean over rows of KL(p_t || p_s) = sum_c p_t,c (log p_t,c - log p_s,c), in nats, with
    p = softmax(logits) at temperature 1 (the distributions the models actually predict)."""
    log_t, log_s = log_softmax(teacher_logits), log_softmax(student_logits)
    return float(np.mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=-1)))


# ---------------------------------------------------------------- calibration

def reliability_bins(probs: np.ndarray, labels: np.ndarray, num_bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin B_m = ((m-1)/M, m/M]: the row count, the mean confidence
    conf(B_m) and the accuracy acc(B_m) of the top-1 prediction (Guo et al. 2017, sec. 2).
    Empty bins have NaN confidence and accuracy. Confidence 0 is put in the first bin."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=num_bins) / count
        acc = np.bincount(index, weights=correct, minlength=num_bins) / count
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": conf,
            "accuracy": acc}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               num_bins: int = ECE_BINS) -> float:
    """ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)| over equal-width bins (Guo et al. 2017,
    eq. 3). 0 = confidence matches accuracy in every bin; 1 = always certain, always wrong."""
    bins = reliability_bins(probs, labels, num_bins)
    used = bins["count"] > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(bins["count"][used] / len(labels) * gap))


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels, -1/n sum_i log softmax(z_i)[y_i], in nats."""
    return float(-np.mean(log_softmax(logits)[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature scaling (Guo et al. 2017, sec. 4.2): the T > 0 minimizing NLL(z / T, y),
    fitted on held-out data. NLL(z / T) is convex in 1/T, so a bounded 1-D search over log T
    finds the optimum; `bounds` only guard against degenerate data (e.g. all rows right)."""
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    result = minimize_scalar(lambda log_t: nll(logits / np.exp(log_t), labels),
                             bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


# ---------------------------------------------------------------- latency

def latency_percentiles(samples: np.ndarray, percents: tuple[float, ...] = (50, 95, 99)
                        ) -> dict[str, float]:
    """{"p50": ..., ...} of timed runs, with linear interpolation between order statistics
    (numpy's default, Hyndman & Fan 1996 definition 7): the q-th percentile of n sorted samples
    x_1..x_n is x_(h) at fractional rank h = 1 + (n - 1) q / 100, interpolated linearly."""
    values = np.percentile(np.asarray(samples, dtype=float), percents, method="linear")
    return {f"p{p:g}": float(v) for p, v in zip(percents, values, strict=True)}
