"""`distillery evaluate` as a user runs it, its report in a real headless Chromium, and the
report's pure parts (gates, verdict, the spec section)."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from distillery.config import GatesSpec, SpecError, load_spec
from distillery.evaluation.verdict import check_gates, failure_message, widening

from helpers import REFERENCE_SPEC, sets, tiny_overrides, tiny_spec

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_ID = "mnist1d-20990101-000000-abcd"

# Small and quick, but every path: two generator shifts, a generic one, two batch sizes.
EVALUATE = [
    "evaluate.shifts=[{kind: iid_noise, severities: [0.1]}, {kind: translation, severities: "
    "[64, 72]}, {kind: gaussian_noise, severities: [0.5, 1.0]}]",
    "evaluate.latency={batch_sizes: [1, 256], warmup: 2, repetitions: 20, seconds: 0.2}",
    # an untrained student cannot agree with the teacher this often; the ECE gate passes
    "evaluate.gates={min_agreement: 0.99, max_ece: 1.0}",
]


def add_untrained_student(store: Path) -> None:
    """An exported student as distill would leave it, minus the training: evaluate is the real
    thing, the model under evaluation needn't be any good."""
    from distillery.models import build_model, model_card, save_model
    from distillery.stages import Pipeline

    pipeline = Pipeline(tiny_spec(store))
    spec, splits = pipeline.spec, pipeline.splits
    torch.manual_seed(0)
    model = build_model(spec.student.model, splits.num_features, splits.num_classes)
    card = model_card(model, spec.student.model, num_features=splits.num_features,
                      num_classes=splits.num_classes, role="student", run_id=RUN_ID,
                      teacher_fingerprint=pipeline.teacher_parts()[-1],
                      data_fingerprint=pipeline.data_fingerprint, metrics={},
                      spec=spec.model_dump())
    save_model(pipeline.store, ("students", RUN_ID), model, card)


@pytest.fixture(scope="module")
def evaluated(cli, teacher_store, tmp_path_factory):
    """One `distillery evaluate` run over the teacher and an untrained student. Its tests run
    with those that stop the session's Ray (no_local_ray), last: stopped mid-session, the next
    test on it would start it again."""
    import ray

    store = tmp_path_factory.mktemp("evaluate") / "store"
    shutil.copytree(teacher_store, store)
    add_untrained_student(store)
    ray.shutdown()  # the CLI starts its own Ray; two on 2 cores would starve each other
    started = time.perf_counter()
    result = cli("evaluate", "--config", str(REFERENCE_SPEC),
                 *sets(tiny_overrides(store, *EVALUATE)), timeout=300)
    print(f"distillery evaluate took {time.perf_counter() - started:.1f}s")
    (report_dir,) = (store / "reports").iterdir()
    return result, report_dir


@pytest.mark.usefixtures("no_local_ray")  # with the tests that run last: see `evaluated`
def test_evaluate_writes_the_report_and_a_failing_gate_exits_nonzero(evaluated):
    result, report_dir = evaluated
    assert result.returncode == 1, result.stderr[-3000:]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: evaluate gates failed: min_agreement (student: ")
    assert "max_ece" not in error and "Traceback" not in result.stderr
    assert error.endswith(f"report: {report_dir / 'report.html'}")
    assert "evaluate: report in" in result.stdout  # progress lines

    assert sorted(p.name for p in report_dir.iterdir()) == ["report.html", "report.json",
                                                            "report.md"]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["schema_version"] == 1 and report["run_id"] == report_dir.name
    assert [(m["key"], m["role"]) for m in report["models"]] == [("teacher", "teacher"),
                                                                 ("student", "student")]
    assert report["models"][1]["run_id"] == RUN_ID and report["models"][1]["same_data_spec"]
    assert report["data"]["test_rows"] == 200 and report["data"]["num_classes"] == 10
    for key in ("teacher", "student"):
        q = report["quality"][key]
        assert set(q) == {"accuracy", "macro_f1", "top_k", "top_k_accuracy",
                          "per_class_accuracy"}
        assert q["top_k"] == 3 and len(q["per_class_accuracy"]) == 10
        assert q["accuracy"] <= q["top_k_accuracy"] <= 1
        cal = report["calibration"][key]
        assert len(cal["reliability"]["count"]) == 15
        assert sum(cal["reliability"]["count"]) == 200
        assert cal["nll_after_temperature"] <= cal["nll"] + 0.1  # fitted on val, scored on test
    assert set(report["fidelity"]) == {"student"}
    fidelity = report["fidelity"]["student"]
    assert 0 <= fidelity["agreement"] < 0.99 and fidelity["kl_teacher_student"] > 0
    assert fidelity["teacher_right_rows"] + fidelity["teacher_wrong_rows"] == 200

    shifts = {s["kind"]: s for s in report["robustness"]}
    assert list(shifts) == ["iid_noise", "translation", "gaussian_noise"]
    assert shifts["translation"]["severities"] == [48, 64, 72]  # the generator's default first
    assert shifts["gaussian_noise"]["severities"] == [0, 0.5, 1.0]
    assert len(shifts["translation"]["accuracy"]["student"]) == 3
    assert shifts["iid_noise"]["agreement"]["student"][0] == 1.0
    assert shifts["iid_noise"]["accuracy"]["teacher"][0] == report["quality"]["teacher"][
        "accuracy"]

    eff = report["efficiency"]
    assert eff["threads"] == 1 and eff["batch_sizes"] == ["1", "256"]
    for key in ("teacher", "student"):
        e = eff["models"][key]
        assert set(e["size_bytes"]) == {"model.pt", "model.ts"}
        for batch in ("1", "256"):
            lat = e["latency_s"][batch]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["repetitions"] >= 5
            assert lat["cpu_share"] > 0
            assert e["throughput_rows_per_s"][batch] > 0
        assert e["peak_memory_bytes"] >= 0
    assert eff["models"]["student"]["vs_teacher"]["params"] == (
        eff["models"]["teacher"]["params"] / eff["models"]["student"]["params"])

    failures = report["failures"]["student"]
    assert len(failures["confusion"]) == 10 and sum(map(sum, failures["confusion"])) == 200
    assert 0 < len(failures["examples"]) <= 8 and len(failures["divergent_classes"]) == 3
    assert report["gates"]["passed"] is False
    assert {(g["gate"], g["passed"]) for g in report["gates"]["results"]} == {
        ("min_agreement", False), ("max_ece", True)}
    assert report["verdict"]["student"].startswith("student keeps ")
    assert report["figures"] == ["quality", "calibration", "robustness", "efficiency",
                                 "failures", "disagreements-student"]
    assert "| top-1 agreement |" in (report_dir / "report.md").read_text()


@pytest.mark.usefixtures("no_local_ray")  # with the tests that run last: see `evaluated`
def test_report_html_shows_every_plot_in_headless_chromium(evaluated):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra (playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium package)")
    _, report_dir = evaluated
    figures = json.loads((report_dir / "report.json").read_text())["figures"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto((report_dir / "report.html").as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => ({inline: "
                                   "i.src.startsWith('data:image/png;base64,'), "
                                   "loaded: i.complete && i.naturalWidth > 0}))")
        finally:
            browser.close()
    assert len(images) == len(figures) == 6
    # inlined, so the file alone is the whole report
    assert all(i["inline"] and i["loaded"] for i in images), images


@pytest.mark.parametrize("name", ["nope", "../teachers/cnn-teacher"])
def test_unknown_model_is_named(cli_inprocess, store_copy, name):
    result = cli_inprocess("evaluate", "--config", str(REFERENCE_SPEC), "--models",
                           f"teacher,{name}", *sets(tiny_overrides(store_copy)))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: --models: no exported student {name!r} in ")
    assert "valid: teacher, student, baseline" in result.stderr


# ---------------------------------------------------------------- pure parts

def report_stub(agreement=0.95, ece=0.05, speedup=4.0, accuracy=0.9) -> dict:
    return {"models": [{"key": "teacher", "role": "teacher"}, {"key": "student",
                                                               "role": "student"},
                       {"key": "baseline", "role": "baseline"}],
            "quality": {"teacher": {"accuracy": 1.0}, "student": {"accuracy": accuracy},
                        "baseline": {"accuracy": 0.5}},
            "fidelity": {"student": {"agreement": agreement}, "baseline": {"agreement": 0.1}},
            "calibration": {"student": {"ece": ece}, "baseline": {"ece": 0.9}},
            "efficiency": {"largest_batch": "64", "models": {
                "student": {"vs_teacher": {"throughput": {"64": speedup}}},
                "baseline": {"vs_teacher": {"throughput": {"64": 0.1}}}}}}


def test_gates_apply_to_students_with_inclusive_thresholds():
    gates = GatesSpec(min_accuracy_ratio=0.9, min_agreement=0.95, max_ece=0.05, min_speedup=4)
    result = check_gates(gates, report_stub())
    assert result["passed"] and len(result["results"]) == 4  # the baseline is not gated
    result = check_gates(gates, report_stub(ece=0.06, speedup=3.5))
    assert not result["passed"]
    assert failure_message(result) == ("evaluate gates failed: max_ece (student: 0.06 > 0.05), "
                                       "min_speedup (student: 3.5 < 4)")
    assert check_gates(GatesSpec(), report_stub(agreement=0.0)) == {"passed": True,
                                                                    "results": []}


def test_widening_is_how_much_more_than_the_teacher_a_model_loses():
    shift = {"accuracy": {"teacher": [0.9, 0.8], "student": [0.9, 0.6]}}
    assert widening(shift, "student", "teacher") == pytest.approx(0.2)
    shift = {"accuracy": {"teacher": [0.9, 0.5], "student": [0.8, 0.7]}}
    assert widening(shift, "student", "teacher") == pytest.approx(-0.3)


@pytest.mark.parametrize("override, message", [
    ("evaluate.shifts=[{kind: translation, severities: [0.5]}]",
     "evaluate.shifts.0: translation severities are max_translation values"),
    ("evaluate.shifts=[{kind: feature_dropout, severities: [1.5]}]",
     "evaluate.shifts.0: feature_dropout severities are shares, <= 1"),
    ("evaluate.gates.max_ece=2", "evaluate.gates.max_ece: must be <= 1"),
    ("evaluate.latency.repetitions=2", "evaluate.latency.repetitions: must be >= 5"),
])
def test_evaluate_section_is_validated_with_field_paths(override, message):
    with pytest.raises(SpecError, match=f"^{message}"):
        load_spec(REFERENCE_SPEC, [override])


def test_generator_shifts_need_mnist1d_data(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,y\n1,0\n")
    data = f"data={{source: csv, path: {table}, features: [a], label: y}}"
    with pytest.raises(SpecError, match=r"^evaluate: shifts.0.kind: 'scale' regenerates mnist1d"):
        load_spec(REFERENCE_SPEC, [data, "evaluate.shifts=[{kind: scale, severities: [1]}]"])
    spec = load_spec(REFERENCE_SPEC, [data, "evaluate.shifts=[{kind: scaling, severities: [2]}]"])
    assert spec.evaluate.shifts[0].kind == "scaling"
