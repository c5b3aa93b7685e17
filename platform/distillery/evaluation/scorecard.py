"""The report's quality sections, computed from logits and labels (no models, no Ray).

Each function returns plain JSON-ready values (floats, ints, lists; NaN -> None) keyed as in
the report schema (SCHEMA.md).
"""

from __future__ import annotations

import math

import numpy as np

from distillery.evaluation import metrics as m

EXAMPLES = 8
"""Disagreement examples kept (and plotted) per student."""
DIVERGENT_CLASSES = 3
"""Classes listed where a student disagrees with the teacher most."""


def finite(value):
    """None for NaN (JSON has no NaN); lists element-wise."""
    if isinstance(value, list | tuple | np.ndarray):
        return [finite(v) for v in value]
    value = float(value)
    return None if math.isnan(value) else value


def quality(logits: np.ndarray, labels: np.ndarray, num_classes: int, top_k: int) -> dict:
    pred = logits.argmax(axis=1)
    k = min(top_k, num_classes)
    return {"accuracy": m.accuracy(pred, labels),
            "macro_f1": m.macro_f1(labels, pred, num_classes),
            "top_k": k, "top_k_accuracy": m.top_k_accuracy(logits, labels, k),
            "per_class_accuracy": finite(m.per_class_accuracy(labels, pred, num_classes))}


def fidelity(teacher_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
    teacher_pred, pred = teacher_logits.argmax(axis=1), logits.argmax(axis=1)
    right, wrong = m.agreement_by_teacher_correctness(teacher_pred, pred, labels)
    teacher_right = int(np.sum(teacher_pred == labels))
    return {"agreement": m.agreement(teacher_pred, pred),
            "kl_teacher_student": m.mean_kl(teacher_logits, logits),
            "agreement_teacher_right": finite(right), "agreement_teacher_wrong": finite(wrong),
            "teacher_right_rows": teacher_right, "teacher_wrong_rows": len(labels) - teacher_right}


def calibration(val_logits: np.ndarray, val_labels: np.ndarray, logits: np.ndarray,
                labels: np.ndarray) -> dict:
    """ECE and NLL on the test split, before and after temperature scaling fitted on val."""
    temperature = m.fit_temperature(val_logits, val_labels)
    bins = m.reliability_bins(m.softmax(logits), labels)
    return {"ece": m.expected_calibration_error(m.softmax(logits), labels),
            "nll": m.nll(logits, labels),
            "temperature": temperature,
            "ece_after_temperature": m.expected_calibration_error(
                m.softmax(logits / temperature), labels),
            "nll_after_temperature": m.nll(logits / temperature, labels),
            "reliability": {"lower": finite(bins["lower"]), "upper": finite(bins["upper"]),
                            "count": bins["count"].astype(int).tolist(),
                            "confidence": finite(bins["confidence"]),
                            "accuracy": finite(bins["accuracy"])}}


def robustness(shifted: list, logits: dict[str, list[np.ndarray]], teacher: str,
               clean_accuracy: dict[str, float], parameters: dict[str, tuple[str, float]]
               ) -> list[dict]:
    """Per shift kind: severities (clean value first) and each model's accuracy and agreement
    with the teacher at each. `shifted[i]` pairs with `logits[key][i]`."""
    out: dict[str, dict] = {}
    for i, shift in enumerate(shifted):
        name, clean_value = parameters[shift.kind]
        entry = out.setdefault(shift.kind, {
            "kind": shift.kind, "parameter": name, "severities": [clean_value],
            "accuracy": {key: [clean_accuracy[key]] for key in logits},
            "agreement": {key: [1.0] for key in logits if key != teacher}})
        entry["severities"].append(shift.severity)
        teacher_pred = logits[teacher][i].argmax(axis=1)
        for key, per_set in logits.items():
            pred = per_set[i].argmax(axis=1)
            entry["accuracy"][key].append(m.accuracy(pred, shift.y))
            if key != teacher:
                entry["agreement"][key].append(m.agreement(teacher_pred, pred))
    return list(out.values())


def failures(teacher_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray,
             num_classes: int) -> dict:
    """Where a student parts from the teacher: classes by agreement, and example rows."""
    teacher_pred, pred = teacher_logits.argmax(axis=1), logits.argmax(axis=1)
    classes = []
    for c in range(num_classes):
        rows = labels == c
        if rows.any():
            classes.append({"class": c, "rows": int(rows.sum()),
                            "agreement": m.agreement(teacher_pred[rows], pred[rows]),
                            "teacher_accuracy": m.accuracy(teacher_pred[rows], c),
                            "accuracy": m.accuracy(pred[rows], c)})
    classes.sort(key=lambda row: (row["agreement"], row["accuracy"] - row["teacher_accuracy"]))
    disagree = np.flatnonzero(pred != teacher_pred)
    picked = np.sort(np.random.default_rng(0).choice(
        disagree, size=min(EXAMPLES, len(disagree)), replace=False))
    confidence = m.softmax(logits).max(axis=1)
    examples = [{"row": int(r), "label": int(labels[r]), "teacher": int(teacher_pred[r]),
                 "prediction": int(pred[r]), "confidence": float(confidence[r])}
                for r in picked]
    return {"divergent_classes": classes[:DIVERGENT_CLASSES],
            "disagreements": int(len(disagree)), "examples": examples}
