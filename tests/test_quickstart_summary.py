"""The quickstart's summary: the student's ratios to the teacher and the baseline, taken from
the evaluation report (pure)."""

from distillery.quickstart import ratios


def report(throughput: dict[str, float], largest: str) -> dict:
    return {"quality": {"teacher": {"accuracy": 0.8}, "student": {"accuracy": 0.78},
                        "baseline": {"accuracy": 0.7}},
            "efficiency": {"largest_batch": largest,
                           "models": {"student": {"vs_teacher": {"throughput": throughput}}}}}


def test_ratios_come_from_the_report():
    assert ratios(report({"1": 3.14159, "256": 7.5}, "256")) == {
        "student_vs_teacher_accuracy": 0.975, "student_minus_baseline_accuracy": 0.08,
        "student_vs_teacher_throughput_b1": 3.1416, "student_vs_teacher_throughput_bmax": 7.5}


def test_no_batch_one_timed_no_batch_one_ratio():
    out = ratios(report({"8": 2.0, "64": 4.0}, "64"))
    assert "student_vs_teacher_throughput_b1" not in out
    assert out["student_vs_teacher_throughput_bmax"] == 4.0
