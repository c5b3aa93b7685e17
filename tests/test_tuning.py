"""`distillery tune`: the search space checked against the spec, the result files, and a real
search on a local Ray, killed mid-run and resumed from the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillery.config import SpecError, load_spec
from distillery.tuning.results import best_yaml, compare, markdown_table, pareto_front
from distillery.tuning.space import check_space, space_override, trial_base, trial_spec

from helpers import REFERENCE_SPEC, ROOT, sets, tiny_overrides

SPACES = sorted((ROOT / "tune").glob("*.yaml"))
RESPONSE = ROOT / "tune" / "mnist1d_response.yaml"
SIZE = ROOT / "tune" / "mnist1d_student_size.yaml"


def with_space(path: Path, *overrides: str):
    return load_spec(REFERENCE_SPEC, [space_override(str(path)), *overrides])


# ------------------------------------------------------------------ the space

@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_fits_the_reference_spec(path):
    spec = with_space(path)
    check_space(spec)
    assert spec.tune.space


@pytest.mark.parametrize("override, message", [
    ("tune.space.distill.temperature={type: uniform, lower: 0, upper: 8}",
     "tune.space.distill.temperature.lower: must be > 0.0, got 0.0"),
    ("tune.space.distill.temperature.lower=0",
     "tune.space.distill.temperature: loguniform needs lower > 0, got 0.0"),
    ("tune.space.distill.alpha.upper=1.5",
     "tune.space.distill.alpha.upper: must be <= 1.0, got 1.5"),
    ("tune.space.distill.temprature={type: uniform, lower: 1, upper: 8}",
     "tune.space.distill.temprature: unknown field 'temprature'; distill has: epochs, "),
    ("tune.space.distill.kl={type: choice, values: [forward, kl2]}",
     "tune.space.distill.kl.values.1: Input should be 'forward', 'reverse' or 'jsd'"),
    ("tune.space.distill.feature.weight={type: uniform, lower: 1, upper: 2}",
     "tune.space.distill.feature.weight: distill.feature is not set in the spec"),
    ("tune.space.student.model.channels.2={type: choice, values: [8]}",
     "tune.space.student.model.channels.2: student.model.channels is a list of 2; no item '2'"),
    ("tune.space.teacher.train.lr={type: uniform, lower: 0.001, upper: 0.01}",
     "tune.space.teacher.train.lr: only distill.* and student.* fields can be searched"),
    ("tune.space.distill.num_workers={type: choice, values: [1, 2]}",
     "tune.space.distill.num_workers: set by tune.workers_per_trial, not searched"),
    ("tune.space.distill.temperature.lower=5",
     "tune.space.distill.temperature: the spec's own value 4.0 is outside the space"),
    ("tune.workers_per_trial=3",
     "tune.workers_per_trial: distill: batch_size 256 must be a multiple of num_workers 3"),
    ("tune.scheduler.grace_period=10",
     "tune.scheduler.grace_period: must be < the trials' epochs (10), got 10"),
    ("tune.pareto=true", "tune: pareto needs scheduler {type: fifo}"),
    ("tune.scheduler={type: fifo, grace_period: 2}",
     "tune.scheduler: grace_period and reduction_factor are asha settings"),
    ("tune.space.distill.lr={type: choice, values: [0.01], lower: 0.001}",
     "tune.space.distill.lr: choice takes a non-empty `values` list and no lower/upper"),
    ("tune.space={distill.alpha: {type: uniform, lower: 0, upper: 1}, "
     "distill: {alpha: {type: uniform, lower: 0, upper: 1}}}",
     "tune.space: distill.alpha is given twice"),
])
def test_bad_space_names_the_field(override, message):
    with pytest.raises(SpecError) as err:
        check_space(with_space(RESPONSE, override))
    assert str(err.value).startswith(message), str(err.value)


def test_optuna_takes_scalar_choices_only():
    with pytest.raises(SpecError, match=r"^tune.space.student.model.channels.values: optuna "):
        check_space(with_space(SIZE, "tune.space.student.model.channels={type: choice, "
                                     "values: [[8, 16], [16, 32]]}"))
    # random search takes whole sections as choices, compared with the spec's defaults filled in
    check_space(with_space(RESPONSE, "tune.space.student.model={type: choice, values: "
                                     "[{arch: mlp, hidden: [32]}, "
                                     "{arch: cnn1d, channels: [8, 16], hidden: 16}]}"))


def test_bad_space_on_the_cli_is_one_line_before_any_ray_work(cli, tmp_path):
    """In a fresh process, as a user runs it: the one line and nothing else on stderr."""
    result = cli("tune", "--config", str(REFERENCE_SPEC), "--space", str(RESPONSE),
                 "--set", f"store={tmp_path}", "--set", "tune.space.distill.temperature="
                 "{type: uniform, lower: -1, upper: 8}", timeout=60)
    assert result.returncode == 2
    assert result.stderr == "error: tune.space.distill.temperature.lower: must be > 0.0, got -1.0\n"
    assert list(tmp_path.iterdir()) == []


def test_tune_needs_a_tune_section_and_resume_an_unfinished_run(cli_inprocess, tmp_path):
    result = cli_inprocess("tune", "--config", str(REFERENCE_SPEC), "--set", f"store={tmp_path}")
    assert result.returncode == 2 and "the spec has no tune section" in result.stderr
    result = cli_inprocess("tune", "--resume", "--config", str(REFERENCE_SPEC), "--space",
                           str(RESPONSE), "--set", f"store={tmp_path}")
    assert result.returncode == 2 and "no unfinished tune run" in result.stderr


def test_trial_spec_sets_paths_and_sizes_each_trial():
    spec = with_space(SIZE)
    base = trial_base(spec)
    trial = trial_spec(base, {"student.model.channels.1": 32, "distill.temperature": 2.5})
    assert trial.student.model.channels == [8, 32]
    assert trial.distill.temperature == 2.5
    assert trial.distill.num_workers == 1 and trial.distill.epochs == 10  # from tune
    assert trial.tune is None
    assert spec.student.model.channels == [8, 16]  # the base is copied, not changed


# ------------------------------------------------------------------ results

def test_pareto_front():
    points = [(0.90, 100), (0.80, 50), (0.85, 100), (0.90, 200), (0.70, 50), (0.95, 300),
              (0.80, 50)]
    # (0.85, 100) and (0.90, 200) lose to (0.90, 100); (0.70, 50) to (0.80, 50); equal points
    # do not dominate each other
    assert pareto_front(points) == [1, 6, 0, 5]
    assert pareto_front([]) == []


def test_compare_counts_standard_errors():
    beyond = compare(0.9, 0.8, 400)  # stderr sqrt((0.09 + 0.16) / 400) = 0.025
    assert beyond["stderr"] == pytest.approx(0.025)
    assert beyond["z"] == pytest.approx(4.0) and not beyond["within_noise"]
    within = compare(0.9, 0.88, 400)
    assert within["z"] == pytest.approx(0.02 / (0.1956 / 400) ** 0.5)
    assert within["within_noise"]
    assert compare(1.0, 1.0, 400)["within_noise"]


def test_best_yaml_round_trips_through_load_spec(tmp_path):
    spec = with_space(RESPONSE)
    best = trial_spec(trial_base(spec), {"distill.temperature": 2.0, "distill.alpha": 0.5})
    path = tmp_path / "best.yaml"
    path.write_text(best_yaml(best, ["a header", "two lines"]))
    assert path.read_text().startswith("# a header\n# two lines\n")
    loaded = load_spec(path)
    assert loaded == best
    assert loaded.tune is None and loaded.distill.temperature == 2.0


def test_markdown_table_ranks_completed_then_stopped_then_failed():
    rows = [
        {"trial": "t0", "order": 0, "status": "stopped", "epochs": 2, "val_accuracy": 0.9,
         "params": {"a": 1}},
        {"trial": "t1", "order": 1, "status": "completed", "epochs": 4, "val_accuracy": 0.8,
         "params": {"a": 0.5}, "student_params": 10, "test_accuracy": 0.75},
        {"trial": "t2", "order": 2, "status": "error", "epochs": None, "val_accuracy": None,
         "params": {"a": [1, 2]}},
        {"trial": "t3", "order": 3, "status": "completed", "epochs": 4, "val_accuracy": 0.85,
         "params": {"a": 2}, "student_params": 10, "test_accuracy": 0.8},
    ]
    lines = markdown_table(rows, "val_accuracy", ["a"], own="t0").splitlines()
    assert lines[0] == ("| trial | status | epochs | val_accuracy | a | student params "
                        "| test accuracy |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| t3", "| t1",
                                                           "| t0 (spec's values)", "| t2"]
    assert lines[-1] == "| t2 | error | - | - | [1, 2] | - | - |"


# ------------------------------------------------------------------ searches

def recorded(run: Path) -> dict[str, str]:
    """Trial id -> status, as Tune's last saved experiment state has them, once the searcher's
    state is saved beside it (Tune uploads the files of one save in no fixed order)."""
    states = sorted(run.glob("experiment_state-*.json"))
    searcher = [*run.glob("searcher-state-*.pkl"), *run.glob("search_gen_state-*.json")]
    if not states or len(searcher) < 2:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # caught mid-write
        return {}
    trials = [json.loads(state) for state, _ in data["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def test_killed_pareto_search_resumes_and_writes_table_best_spec_and_plot(cli, cached_store_copy,
                                                                          tmp_path, no_local_ray):
    """One search, killed after its first trial and resumed by rerunning the same command."""
    args = ["tune", "--config", str(REFERENCE_SPEC), "--space", str(SIZE),
            *sets(tiny_overrides(cached_store_copy, "tune.num_samples=2",
                                 "tune.max_concurrent=1", "tune.epochs=2"))]
    # Tune saves its experiment state every 10 s or more; every second here, so the kill can
    # follow a trial's end closely
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([sys.executable, "-m", "distillery.cli", *args], stdout=log,
                             stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while True:
            runs = list((cached_store_copy / "tune").glob("*"))
            done = {n for n, s in recorded(runs[0]).items() if s == "TERMINATED"} if runs else {}
            if done:
                break
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no finished trial recorded in time"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver, its trials and its embedded Ray
        first.wait()
    (run,) = runs
    assert not (run / "summary.json").exists()
    cards = {p: p.stat().st_mtime_ns for p in (run / "trials").glob("*/card.json")}

    result = cli(*args, env=env)  # the same command again: it finds the unfinished run
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"tune: resuming run {run.name}" in output
    for trial in done:
        assert f"tune: trial {trial} started" not in output
    for card, mtime in cards.items():  # students of finished trials are not exported again
        assert card.stat().st_mtime_ns == mtime

    summary = json.loads((run / "summary.json").read_text())
    rows = json.loads((run / "trials.json").read_text())
    assert len(rows) == 2
    assert all(r["status"] == "completed" and r["epochs"] == 2 for r in rows)  # fifo
    # the first trial evaluates the spec's own values
    assert rows[0] == summary["spec_values"]
    assert rows[0]["params"] == {"student.model.channels.0": 8, "student.model.channels.1": 16,
                                 "distill.temperature": 4.0, "distill.alpha": 0.9}
    assert rows[0]["student_params"] == 5498
    front = pareto_front([(r["val_accuracy"], r["student_params"]) for r in rows])
    assert summary["pareto"] == [rows[i] for i in front]
    for r in rows:
        assert (run / "trials" / r["student"] / "card.json").is_file()
    assert not (cached_store_copy / "students").exists()  # evaluate and serving never see trials

    best = load_spec(run / "best.yaml")
    winner = summary["best"]
    assert winner["val_accuracy"] == max(r["val_accuracy"] for r in rows)
    assert best.distill.temperature == winner["params"]["distill.temperature"]
    assert best.student.model.channels == [winner["params"]["student.model.channels.0"],
                                           winner["params"]["student.model.channels.1"]]
    assert best.distill.num_workers == 1 and best.distill.epochs == 2 and best.tune is None
    assert (run / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert "| trial | status |" in (run / "trials.md").read_text()
    assert summary["best_vs_spec_values"]["val_rows"] == 80
