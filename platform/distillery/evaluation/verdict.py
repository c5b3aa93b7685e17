"""The report's conclusion: one sentence per student, and pass/fail against `evaluate.gates`.

Both read only the report's sections, so CI and the rollout can recompute them from
report.json alone.
"""

from __future__ import annotations

from distillery.config import GatesSpec


def gate_values(report: dict, key: str) -> dict[str, float]:
    """What each gate compares for model `key` (see GatesSpec for the definitions)."""
    teacher, efficiency = report["models"][0]["key"], report["efficiency"]
    return {
        "min_accuracy_ratio": (report["quality"][key]["accuracy"]
                               / report["quality"][teacher]["accuracy"]),
        "min_agreement": report["fidelity"][key]["agreement"],
        "max_ece": report["calibration"][key]["ece"],
        "min_speedup": efficiency["models"][key]["vs_teacher"]["throughput"][
            efficiency["largest_batch"]],
    }


def check_gates(gates: GatesSpec, report: dict) -> dict:
    """Every set gate against every model of role student; `passed` is true when all pass
    (and when no gate is set)."""
    results = []
    for model in report["models"]:
        if model["role"] != "student":
            continue
        values = gate_values(report, model["key"])
        for gate, threshold in gates.model_dump().items():
            if threshold is None:
                continue
            value = values[gate]
            passed = value <= threshold if gate.startswith("max_") else value >= threshold
            results.append({"gate": gate, "model": model["key"], "value": value,
                            "threshold": threshold, "passed": passed})
    return {"passed": all(r["passed"] for r in results), "results": results}


def failure_message(gates: dict) -> str:
    """One line naming each failing gate with its measured value and threshold."""
    failed = [f"{r['gate']} ({r['model']}: {r['value']:.4g} "
              f"{'>' if r['gate'].startswith('max_') else '<'} {r['threshold']:g})"
              for r in gates["results"] if not r["passed"]]
    return "evaluate gates failed: " + ", ".join(failed)


def sentence(report: dict, key: str) -> str:
    """e.g. "student keeps 96% of the teacher's accuracy (0.890 vs 0.926) at 1/14.5 the
    parameters and 4.8x the throughput; ECE 0.031 vs 0.052; loses most under translation
    (0.612 vs teacher 0.701 at max_translation=72)"."""
    teacher = report["models"][0]["key"]
    acc, t_acc = report["quality"][key]["accuracy"], report["quality"][teacher]["accuracy"]
    versus = report["efficiency"]["models"][key]["vs_teacher"]
    smaller = versus["params"]
    size = f"1/{smaller:.1f}" if smaller >= 1 else f"{1 / smaller:.1f}x"
    speed = versus["throughput"][report["efficiency"]["largest_batch"]]
    text = (f"{key} keeps {acc / t_acc:.0%} of the teacher's accuracy ({acc:.3f} vs {t_acc:.3f}) "
            f"at {size} the parameters and {speed:.1f}x the throughput; "
            f"ECE {report['calibration'][key]['ece']:.3f} vs "
            f"{report['calibration'][teacher]['ece']:.3f}")
    if report["robustness"]:
        lost, shift = max(((widening(s, key, teacher), s) for s in report["robustness"]),
                          key=lambda pair: pair[0])
        if lost > 0:
            text += (f"; loses most under {shift['kind']} ({shift['accuracy'][key][-1]:.3f} vs "
                     f"teacher {shift['accuracy'][teacher][-1]:.3f} at "
                     f"{shift['parameter']}={shift['severities'][-1]:g})")
        else:
            text += "; holds up under every shift at least as well as the teacher"
    return text


def widening(shift: dict, key: str, teacher: str) -> float:
    """How much more accuracy the model loses than the teacher from the clean test split to the
    shift's strongest severity: (m_clean - m_max) - (t_clean - t_max), comparable across shifts
    whatever their scale; > 0 = the gap to the teacher widens under the shift."""
    t, m = shift["accuracy"][teacher], shift["accuracy"][key]
    return (m[0] - m[-1]) - (t[0] - t[-1])
