"""The store layout: locations pinned to the paths stores already hold, and which stored model a
name means (the newest of a role, the served pair)."""

import pytest

from distillery.config import load_spec
from distillery.storage import Store
from distillery.store_layout import (
    MONITOR_REPORTS,
    REQUEST_LOG,
    ROLLOUT_STATE,
    cache_dir,
    exported_students,
    latest_teacher,
    latest_teacher_dir,
    newest_run,
    record_teacher,
    report_dir,
    served_models,
    served_student,
    student_dir,
    teacher_dir,
    teacher_run_dir,
    trials_dir,
)

from helpers import REFERENCE_SPEC


def test_locations_are_the_paths_existing_stores_hold():
    assert teacher_dir("t", "fp") == ("teachers", "t", "fp")
    assert teacher_run_dir("t", "r") == ("teachers", "t", "runs", "r")
    assert student_dir("r") == ("students", "r")
    assert cache_dir("k") == ("cache", "k")
    assert trials_dir("r") == ("tune", "r", "trials")
    assert report_dir("r") == ("reports", "r")
    assert ROLLOUT_STATE == ("serve", "rollout-state.json")
    assert REQUEST_LOG == ("monitor", "requests")
    assert MONITOR_REPORTS == ("monitor", "reports")


def test_a_recorded_teacher_is_read_back_from_latest_json(tmp_path):
    store = Store(str(tmp_path))
    assert latest_teacher(store, "t") is None
    with pytest.raises(FileNotFoundError, match="no teacher 't' .* run `distillery train-teacher`"):
        latest_teacher_dir(store, "t")
    record_teacher(store, "t", "fp1", teacher_spec_hash="h")
    assert store.read_json("teachers", "t", "latest.json") == {"fingerprint": "fp1",
                                                               "teacher_spec_hash": "h"}
    assert latest_teacher_dir(store, "t") == ("teachers", "t", "fp1")


def card(role: str, created: str, pipeline: str = "mnist1d", shape=(40, 10)) -> dict:
    return {"role": role, "created": created, "spec": {"name": pipeline},
            "num_features": shape[0], "num_classes": shape[1]}


def student_store(tmp_path) -> Store:
    store = Store(str(tmp_path))
    store.write_json(card("student", "2026-01-02T00:00:00Z"), "students", "new", "card.json")
    store.write_json(card("student", "2026-01-01T00:00:00Z"), "students", "old", "card.json")
    store.write_json(card("baseline", "2026-01-03T00:00:00Z"), "students", "base", "card.json")
    store.write_json(card("student", "2026-01-09T00:00:00Z", pipeline="other"),
                     "students", "other", "card.json")
    # an interrupted run (no card) and a language-model student's start weights
    store.write_bytes(b"", "students", "torn", "checkpoints", "epoch-0001")
    store.write_json(card("init", "2026-01-09T00:00:00Z"), "students", "init", "fp", "card.json")
    return store


def test_the_newest_exported_model_of_a_role_of_this_pipeline(tmp_path):
    cards = exported_students(student_store(tmp_path), "mnist1d")
    assert sorted(cards) == ["base", "new", "old"]
    assert newest_run(cards, "student") == "new"
    assert newest_run(cards, "baseline") == "base"
    assert newest_run(cards, "peer") is None


def test_served_student_is_the_newest_or_a_named_exported_run(tmp_path):
    store = student_store(tmp_path)
    assert served_student(store, "mnist1d", "student") == "new"
    assert served_student(store, "mnist1d", "old") == "old"
    with pytest.raises(FileNotFoundError, match="serve.student: no exported student 'torn'"):
        served_student(store, "mnist1d", "torn")
    with pytest.raises(FileNotFoundError, match="no student of 'none'.*`distillery distill`"):
        served_student(store, "none", "student")


def test_served_models_pairs_the_teacher_with_the_served_student(tmp_path):
    store = student_store(tmp_path)
    spec = load_spec(REFERENCE_SPEC, [f"store={tmp_path}", "serve.student=old"])
    store.write_json(card("teacher", "2026-01-01T00:00:00Z"), "teachers", spec.teacher.name,
                     "fp", "card.json")
    record_teacher(store, spec.teacher.name, "fp")
    parts, cards = served_models(spec)
    assert parts == {"teacher": ("teachers", spec.teacher.name, "fp"),
                     "student": ("students", "old")}
    assert cards["student"]["created"] == "2026-01-01T00:00:00Z"
    store.write_json(card("student", "2026-01-05T00:00:00Z", shape=(40, 3)),
                     "students", "narrow", "card.json")
    spec = load_spec(REFERENCE_SPEC, [f"store={tmp_path}", "serve.student=narrow"])
    with pytest.raises(ValueError, match="teacher and student disagree"):
        served_models(spec)
