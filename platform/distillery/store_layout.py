"""Where every artifact lives in the store, and which stored model a name means.

    teachers/<name>/latest.json       {"fingerprint": ...} of the teacher <name> trained last
    teachers/<name>/<fingerprint>/    its model files and card.json
    teachers/<name>/runs/<run_id>/    Ray Train's checkpoints while a teacher trains
    students/<run_id>/                checkpoints, model files, card.json (distill, baseline)
    students/init/<fingerprint>/      a language-model student's starting weights
    cache/<key>/                      teacher outputs, Parquet, and manifest.json
    tokenizers/<fingerprint>/         the language-model pipeline's tokenizer, manifest.json
    lm-data/<fingerprint>/            its packed blocks, manifest.json
    data/<fingerprint>/               a table's statistics and in-memory sample, manifest.json
    tune/<run_id>/                    a search; trials/<trial_id>/ are its students
    reports/<run_id>/                 an evaluate report
    serve/rollout-state.json          the rollout a restarted Serve app resumes
    monitor/requests/date=<day>/      the request log
    monitor/reports/<window>/         drift reports, control charts, check.json

A directory is committed by a marker written last: card.json for a model, manifest.json for a
cache, tokenizer, packed data or a table's sample. Readers trust a directory only when its
marker exists, so a run that dies mid-write never leaves something a later run reads as good.
Locations are `parts`: path segments under the store's root, as `Store` takes them.
"""

from __future__ import annotations

from distillery.config import PipelineSpec, ServeSpec
from distillery.storage import Store

Parts = tuple[str, ...]

CARD = "card.json"
MANIFEST = "manifest.json"
LATEST = "latest.json"

STUDENTS: Parts = ("students",)
TUNE: Parts = ("tune",)
ROLLOUT_STATE: Parts = ("serve", "rollout-state.json")
REQUEST_LOG: Parts = ("monitor", "requests")
MONITOR_REPORTS: Parts = ("monitor", "reports")


def teacher_dir(name: str, fingerprint: str) -> Parts:
    return ("teachers", name, fingerprint)


def teacher_run_dir(name: str, run_id: str) -> Parts:
    return ("teachers", name, "runs", run_id)


def student_dir(run_id: str) -> Parts:
    return (*STUDENTS, run_id)


def student_init_dir(fingerprint: str) -> Parts:
    return (*STUDENTS, "init", fingerprint)


def cache_dir(key: str) -> Parts:
    return ("cache", key)


def tokenizer_dir(fingerprint: str) -> Parts:
    return ("tokenizers", fingerprint)


def lm_data_dir(fingerprint: str) -> Parts:
    return ("lm-data", fingerprint)


def table_data_dir(fingerprint: str) -> Parts:
    return ("data", fingerprint)


def tune_dir(run_id: str) -> Parts:
    return (*TUNE, run_id)


def trials_dir(tune_run_id: str) -> Parts:
    """Where a search's trials export their students: apart from students/, so that evaluate
    and serving never pick a trial."""
    return (*tune_dir(tune_run_id), "trials")


def report_dir(run_id: str) -> Parts:
    return ("reports", run_id)


# ---------------------------------------------------------------- models

def has_card(store: Store, parts: Parts) -> bool:
    """Whether a model is committed at `parts`."""
    return store.exists(*parts, CARD)


def read_card(store: Store, parts: Parts) -> dict:
    return store.read_json(*parts, CARD)


def latest_teacher(store: Store, name: str) -> dict | None:
    """teachers/<name>/latest.json: the fingerprint of the teacher trained last, with what the
    pipeline recorded beside it; None before the first."""
    if not store.exists("teachers", name, LATEST):
        return None
    return store.read_json("teachers", name, LATEST)


def record_teacher(store: Store, name: str, fingerprint: str, **extra: str) -> None:
    """Make teachers/<name>/<fingerprint> the teacher <name>; written after its card."""
    store.write_json({"fingerprint": fingerprint, **extra}, "teachers", name, LATEST)


def latest_teacher_dir(store: Store, name: str) -> Parts:
    latest = latest_teacher(store, name)
    if latest is None:
        raise FileNotFoundError(f"no teacher {name!r} in {store.root}; run `distillery "
                                "train-teacher` first")
    return teacher_dir(name, latest["fingerprint"])


def exported_students(store: Store, pipeline: str) -> dict[str, dict]:
    """run id -> card of every committed model under students/ that `pipeline` made."""
    cards = {}
    for run in store.listdir(*STUDENTS):
        if has_card(store, student_dir(run)):
            card = read_card(store, student_dir(run))
            if card.get("spec", {}).get("name") == pipeline:
                cards[run] = card
    return cards


def newest_run(cards: dict[str, dict], role: str) -> str | None:
    """The run id among `cards` (from exported_students) of the newest model of `role`
    (student, baseline) by its card's `created` time; None when there is none."""
    runs = [(card["created"], run) for run, card in cards.items() if card.get("role") == role]
    return max(runs)[1] if runs else None


def served_student(store: Store, pipeline: str, wanted: str) -> str:
    """Run id of the student to serve: `student` = the newest exported student of this
    pipeline, anything else a run id under students/."""
    if wanted != "student":
        if not has_card(store, student_dir(wanted)):
            raise FileNotFoundError(f"serve.student: no exported student {wanted!r} in "
                                    f"{store.root}")
        return wanted
    run = newest_run(exported_students(store, pipeline), "student")
    if run is None:
        raise FileNotFoundError(f"serve.student: no student of {pipeline!r} in {store.root}; "
                                "run `distillery distill` first")
    return run


def served_models(spec: PipelineSpec) -> tuple[dict[str, Parts], dict[str, dict]]:
    """({arm: parts}, {arm: card}) of the teacher and the student `spec` serves. The Serve
    app deploys them and monitoring takes its reference from them, so both always agree."""
    store = Store(spec.store)
    parts = {"teacher": latest_teacher_dir(store, spec.teacher.name),
             "student": student_dir(served_student(store, spec.name,
                                                   (spec.serve or ServeSpec()).student))}
    cards = {arm: read_card(store, p) for arm, p in parts.items()}
    shapes = {arm: (c["num_features"], c["num_classes"]) for arm, c in cards.items()}
    if shapes["teacher"] != shapes["student"]:
        raise ValueError(f"teacher and student disagree on (features, classes): {shapes}")
    return parts, cards
