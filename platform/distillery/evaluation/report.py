"""`distillery evaluate`: teacher and students side by side, one report.

Stages: pick the models -> build the shifted test sets -> one Ray Data pass for every model's
logits on val, test and every shifted set -> efficiency, each model alone in a fresh worker ->
metrics, gates, verdict, plots -> `reports/<run_id>/` report.html, report.md and report.json
(written last: a report directory without report.json is an interrupted write).
"""

from __future__ import annotations

import json
import time

from distillery.data import Splits
from distillery.data.sources import open_source
from distillery.evaluation import plots, render, scorecard
from distillery.evaluation.efficiency import measure_all
from distillery.evaluation.inference import all_logits
from distillery.evaluation.metrics import confusion_matrix
from distillery.evaluation.selection import Evaluated, check_shapes
from distillery.evaluation.shifts import parameter_of, shifted_sets
from distillery.evaluation.verdict import check_gates, sentence
from distillery.runtime import new_run_id
from distillery.stages import Pipeline
from distillery.store_layout import report_dir

SCHEMA_VERSION = 1
"""report.json's schema (SCHEMA.md); bumped on any change a reader could trip over."""


def evaluate(pipeline: Pipeline, models: list[Evaluated]) -> dict:
    """Evaluate `models` (from `selection.select_models`, teacher first), write the report and
    return report.json's content plus `location` (the report directory's URI)."""
    spec, store = pipeline.spec, pipeline.store
    started = time.perf_counter()
    timing: dict[str, float] = {}

    def lap(stage: str) -> None:
        timing[stage] = round(time.perf_counter() - started - sum(timing.values()), 2)

    print(f"evaluate: loading {spec.data.source} (labelled splits only)", flush=True)
    splits = open_source(spec.data, store, transfer=False).sample()
    check_shapes(models, splits)
    print("evaluate: models " + ", ".join(
        f"{m.key} ({'/'.join(m.parts)})" for m in models), flush=True)
    shifted = shifted_sets(spec.evaluate.shifts, spec.data, splits)
    lap("data")
    print(f"evaluate: {len(shifted)} shifted test sets in {timing['data']:.1f}s", flush=True)

    keys = {m.key: m.parts for m in models}
    inputs = [splits.x_val, splits.x_test, *(s.x for s in shifted)]
    logits = all_logits(store, keys, inputs, spec.teacher.inference)
    lap("inference")
    print(f"evaluate: logits of {len(models)} models on {sum(len(x) for x in inputs)} rows "
          f"with Ray Data in {timing['inference']:.1f}s", flush=True)

    largest = max(spec.evaluate.latency.batch_sizes)
    efficiency = measure_all(store, keys, splits.x_test[:largest], spec.evaluate.latency)
    lap("efficiency")

    run_id = new_run_id(spec.name)
    report = assemble(pipeline, models, splits, logits, shifted, efficiency, run_id)
    report["gates"] = check_gates(spec.evaluate.gates, report)
    report["verdict"] = {m.key: sentence(report, m.key) for m in models[1:]}
    lap("metrics")
    figures = plots.figures(report, splits.x_test, signals=spec.data.source == "mnist1d")
    report["figures"] = [f.name for f in figures]
    lap("plots")
    report["timing_s"] = {**timing, "total": round(time.perf_counter() - started, 2)}

    where = report_dir(run_id)
    store.write_bytes(render.html(report, figures).encode(), *where, "report.html")
    store.write_bytes(render.markdown(report).encode(), *where, "report.md")
    store.write_bytes(json.dumps(report, indent=2, allow_nan=False).encode(), *where,
                      "report.json")
    location = store.uri(*where)
    for text in report["verdict"].values():
        print(f"evaluate: {text}", flush=True)
    gates = report["gates"]["results"]
    if gates:
        failed = [f"{r['gate']} ({r['model']})" for r in gates if not r["passed"]]
        print(f"evaluate: gates {'failed: ' + ', '.join(failed) if failed else 'passed'}",
              flush=True)
    print(f"evaluate: report in {report['timing_s']['total']:.0f}s -> {location}/report.html",
          flush=True)
    return {**report, "location": location}


def assemble(pipeline: Pipeline, models: list[Evaluated], splits: Splits, logits: dict,
             shifted: list, efficiency: dict, run_id: str) -> dict:
    """report.json's sections from the logits (val, test, *shifted per model)."""
    spec = pipeline.spec
    teacher = models[0].key
    val = {key: per_set[0] for key, per_set in logits.items()}
    test = {key: per_set[1] for key, per_set in logits.items()}
    c = splits.num_classes
    quality = {key: scorecard.quality(test[key], splits.y_test, c, spec.evaluate.top_k)
               for key in test}
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pipeline": spec.name,
        "spec_hash": spec.spec_hash(),
        "evaluate_spec": spec.evaluate.model_dump(),
        "data": {"source": spec.data.source, "fingerprint": pipeline.data_fingerprint,
                 "num_features": splits.num_features, "num_classes": c,
                 "val_rows": len(splits.y_val), "test_rows": len(splits.y_test)},
        "models": [model_entry(pipeline, m) for m in models],
        "quality": quality,
        "fidelity": {key: scorecard.fidelity(test[teacher], test[key], splits.y_test)
                     for key in test if key != teacher},
        "calibration": {key: scorecard.calibration(val[key], splits.y_val, test[key],
                                                   splits.y_test) for key in test},
        "robustness": scorecard.robustness(
            shifted, {key: per_set[2:] for key, per_set in logits.items()}, teacher,
            {key: q["accuracy"] for key, q in quality.items()},
            {s.kind: parameter_of(s.kind) for s in spec.evaluate.shifts}),
        "efficiency": efficiency,
        "failures": {key: {
            "confusion": confusion_matrix(splits.y_test, test[key].argmax(axis=1), c).tolist(),
            **({} if key == teacher else scorecard.failures(test[teacher], test[key],
                                                            splits.y_test, c))}
            for key in test},
    }


def model_entry(pipeline: Pipeline, model: Evaluated) -> dict:
    card = model.card
    return {"key": model.key, "role": model.role, "run_id": card.get("run_id"),
            "location": pipeline.store.uri(*model.parts),
            "fingerprint": card.get("fingerprint"),
            "teacher_fingerprint": card.get("teacher_fingerprint"),
            "architecture": card["architecture"], "params": card["params"],
            "created": card["created"],
            "data_fingerprint": card.get("data_fingerprint"),
            # besides the fingerprints: equal specs with different fingerprints mean the files
            # changed since the model was trained
            "same_data_spec": card["spec"]["data"] == json.loads(
                pipeline.spec.data.model_dump_json())}
