"""Which teacher and student a pipeline serves, as store locations (`parts`) with their cards.

Shared by the Serve app (what to deploy) and monitoring (which models the reference and the
live traffic came from), so both always agree.
"""

from __future__ import annotations

from distillery.config import PipelineSpec, ServeSpec
from distillery.storage import Store


def resolve_student(store: Store, pipeline: str, wanted: str) -> str:
    """Run id of the student to serve: `student` = the newest exported student of this
    pipeline (by its card's `created` time), anything else a run id under students/."""
    if wanted != "student":
        if not store.exists("students", wanted, "card.json"):
            raise FileNotFoundError(f"serve.student: no exported student {wanted!r} in "
                                    f"{store.root}")
        return wanted
    run = newest_run(store, pipeline, "student")
    if run is None:
        raise FileNotFoundError(f"serve.student: no student of {pipeline!r} in {store.root}; "
                                "run `distillery distill` first")
    return run


def newest_run(store: Store, pipeline: str, role: str) -> str | None:
    """Run id under students/ of the newest exported model of `role` (by its card's `created`
    time) that `pipeline` made; None when there is none."""
    runs = []
    for run in store.listdir("students"):
        if store.exists("students", run, "card.json"):
            card = store.read_json("students", run, "card.json")
            if card.get("role") == role and card.get("spec", {}).get("name") == pipeline:
                runs.append((card["created"], run))
    return max(runs)[1] if runs else None


def served_models(spec: PipelineSpec) -> tuple[dict[str, tuple[str, ...]], dict[str, dict]]:
    """({arm: store parts}, {arm: card}) of the teacher and the student `spec` serves."""
    serving = spec.serve or ServeSpec()
    store = Store(spec.store)
    teacher = spec.teacher.name
    if not store.exists("teachers", teacher, "latest.json"):
        raise FileNotFoundError(f"no teacher {teacher!r} in {store.root}; run `distillery "
                                "train-teacher` first")
    parts = {"teacher": ("teachers", teacher,
                         store.read_json("teachers", teacher, "latest.json")["fingerprint"]),
             "student": ("students", resolve_student(store, spec.name, serving.student))}
    cards = {arm: store.read_json(*p, "card.json") for arm, p in parts.items()}
    shapes = {arm: (c["num_features"], c["num_classes"]) for arm, c in cards.items()}
    if shapes["teacher"] != shapes["student"]:
        raise ValueError(f"teacher and student disagree on (features, classes): {shapes}")
    return parts, cards
