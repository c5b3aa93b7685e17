"""Which stored models a report compares: the teacher, then students named on the command line.

`student` and `baseline` name the newest exported model of that role for this pipeline (by the
card's `created` time); anything else is a run id under `students/`. The teacher is always
evaluated, first: fidelity is measured against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distillery.config import NAME_PATTERN
from distillery.data import Splits
from distillery.stages import Pipeline
from distillery.store_layout import exported_students, has_card, newest_run, read_card, student_dir

ROLES = ("student", "baseline")


@dataclass(frozen=True)
class Evaluated:
    key: str  # the report's column name: teacher, student, baseline or a run id
    role: str  # teacher | student | baseline
    parts: tuple[str, ...]  # store path of the model directory
    card: dict


def select_models(pipeline: Pipeline, names: list[str] | None) -> list[Evaluated]:
    """The models to evaluate; `names` None = teacher, student and baseline where they exist."""
    store = pipeline.store
    teacher_parts = pipeline.teacher_parts()
    chosen = [Evaluated("teacher", "teacher", teacher_parts, read_card(store, teacher_parts))]
    cards = exported_students(store, pipeline.spec.name)
    if names is None:
        names = [role for role in ROLES if any(c["role"] == role for c in cards.values())]
    for name in names:
        if name == "teacher":
            continue
        if name in ROLES:
            run = newest_run(cards, name)
            if run is None:
                raise FileNotFoundError(
                    f"--models: no {name} of {pipeline.spec.name!r} in {store.root}; "
                    f"run `distillery {'distill' if name == 'student' else 'baseline'}` first")
        else:
            run = name
            if not re.fullmatch(NAME_PATTERN, run) or not has_card(store, student_dir(run)):
                raise FileNotFoundError(
                    f"--models: no exported student {run!r} in {store.root}; "
                    f"valid: teacher, student, baseline or one of {sorted(cards) or 'none'}")
        card = read_card(store, student_dir(run))
        if any(m.parts == student_dir(run) for m in chosen):
            continue
        chosen.append(Evaluated(name, card["role"], student_dir(run), card))
    return chosen


def check_shapes(models: list[Evaluated], splits: Splits) -> None:
    for model in models:
        shape = (model.card["num_features"], model.card["num_classes"])
        if shape != (splits.num_features, splits.num_classes):
            raise ValueError(f"--models: {model.key} takes {shape[0]} features and predicts "
                             f"{shape[1]} classes; the spec's data has {splits.num_features} "
                             f"and {splits.num_classes}")
