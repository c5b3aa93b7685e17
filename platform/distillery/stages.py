"""The pipeline's stages: train-teacher, teacher-infer, distill and the label-only baseline.

Each stage reads the spec and the store and writes committed artifacts back to the store, so
stages run one by one (CLI, `ray job submit`) or chained (`quickstart`) with the same result.
`distill` is the strategy's own (strategies/), made of `teacher_rows`, `cached_rows`, `train`
and `export_student`.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import ray
import torch
from torch import nn

from distillery.cache import build_cache, read_cache
from distillery.config import (
    HFSpec,
    InferenceSpec,
    ModelSpec,
    PipelineSpec,
    SpecError,
    TeacherInit,
    TeacherSpec,
    TrainSpec,
)
from distillery.data import Splits
from distillery.data.sources import Source, data_fingerprint, distill_row_count, open_source
from distillery.data.splits import to_table
from distillery.data.text import TOKENIZER_FILE
from distillery.models import build_model, fingerprint, load_model, model_card, save_model
from distillery.models.text_classifier import init_from_teacher, stored_spec, teacher_layers
from distillery.runtime import new_run_id, unfinished_runs
from distillery.storage import Store
from distillery.store_layout import (
    STUDENTS,
    latest_teacher,
    latest_teacher_dir,
    read_card,
    record_teacher,
    teacher_dir,
    teacher_run_dir,
)
from distillery.strategies import STRATEGIES, Strategy
from distillery.train import TrainJob, fit, ingest_rows, load_weights


@dataclass
class Pipeline:
    spec: PipelineSpec
    students: tuple[str, ...] = STUDENTS
    """Where runs of distill and baseline go in the store (Tune trials: tune/<run_id>/trials)."""

    @cached_property
    def store(self) -> Store:
        return Store(self.spec.store)

    @cached_property
    def source(self) -> Source:
        print(f"data: loading {self.spec.data.source}", flush=True)
        return open_source(self.spec.data, self.store)

    @cached_property
    def splits(self) -> Splits:
        """The source's in-memory splits (a table's: a bounded sample of each)."""
        return self.source.sample()

    @cached_property
    def strategy(self) -> type[Strategy]:
        """`distill.strategy`: which teachers it reads, and how its distillation runs."""
        return STRATEGIES[self.spec.distill.strategy]

    @cached_property
    def data_fingerprint(self) -> str:
        return data_fingerprint(self.spec.data)

    # ------------------------------------------------------------ teachers

    def teacher_specs(self) -> list[TeacherSpec]:
        """`teacher`, then the other teachers the strategy reads (multi_teacher's)."""
        return [self.spec.teacher, *self.strategy.teachers(self.spec)[1:]]

    def teacher_parts(self, name: str | None = None) -> tuple[str, ...]:
        return latest_teacher_dir(self.store, name or self.spec.teacher.name)

    def train_teacher(self) -> dict:
        """Train (or import) every teacher of the spec; returns the card of `teacher`."""
        return [self._train_one_teacher(t) for t in self.teacher_specs()][0]

    def ensure_teachers(self) -> None:
        """Train the teachers of the spec that the store does not hold yet."""
        for spec in self.teacher_specs():
            if latest_teacher(self.store, spec.name) is None:
                self._train_one_teacher(spec)

    def _train_one_teacher(self, spec: TeacherSpec) -> dict:
        splits = self.splits
        model = build_model(spec.model, splits.num_features, splits.num_classes)
        metrics: dict = {}
        if not spec.pretrained:
            run_id = new_run_id(spec.name)
            result = self._fit(spec.model, spec.train, "supervised", {}, f"teacher {spec.name}",
                               self.source.rows("train"),
                               self.store.uri(*teacher_run_dir(spec.name, run_id)),
                               num_rows=self.source.count("train"))
            model.load_state_dict(load_weights(result)[0])
            metrics = {"val_accuracy": result.metrics["val_accuracy"], "run_id": run_id}
        metrics["test_accuracy"] = accuracy(model, splits.x_test, splits.y_test)
        fp = fingerprint(spec.model, model)
        card = model_card(model, spec.model, num_features=splits.num_features,
                          num_classes=splits.num_classes,
                          class_names=list(splits.class_names), role="teacher", fingerprint=fp,
                          data_fingerprint=self.data_fingerprint, metrics=metrics,
                          spec=self.spec.model_dump())
        card = self._save(teacher_dir(spec.name, fp), model, card)
        record_teacher(self.store, spec.name, fp)
        print(f"train-teacher: {spec.name}: {card['params']} params, test accuracy "
              f"{metrics['test_accuracy']:.4f} -> {self.store.uri(*teacher_dir(spec.name, fp))}",
              flush=True)
        return card

    # ------------------------------------------------------------ cache

    def teacher_infer(self) -> dict | None:
        """Build (or reuse) the cache of every teacher the strategy reads; returns the manifest
        of `teacher`'s (None for a strategy without a teacher: online)."""
        manifests = self._teacher_caches()
        return manifests[0] if manifests else None

    def _teacher_caches(self) -> list[dict]:
        teachers = self.strategy.teachers(self.spec)
        if not teachers:
            print(f"teacher-infer: {self.spec.distill.strategy} distillation has no teacher; "
                  "nothing to cache", flush=True)
            return []
        layers = self.strategy.cache_layers(self.spec)
        return [self._cache(self.teacher_parts(t.name), t.inference, layers if i == 0 else [])
                for i, t in enumerate(teachers)]

    def teacher_rows(self) -> ray.data.Dataset:
        """The distillation rows with the outputs of every teacher the strategy reads, from
        their caches: `teacher`'s as `logits` (and any cached layers), the others' as
        `logits_1`, `logits_2`, ..., joined by row id."""
        manifests = self._teacher_caches()
        rows = read_cache(self.store, manifests[0]["key"])
        for i, extra in enumerate(manifests[1:], start=1):
            rows = join_teacher(rows, read_cache(self.store, extra["key"]), f"logits_{i}")
        return rows

    def cached_rows(self, parts: tuple[str, ...], inference: InferenceSpec) -> ray.data.Dataset:
        """The distillation rows with the outputs of the model at `parts` (a teacher, or an
        assistant that teaches the next stage), from its cache."""
        return read_cache(self.store, self._cache(parts, inference)["key"])

    def _cache(self, parts: tuple[str, ...], inference: InferenceSpec,
               layers: list[str] = ()) -> dict:
        teacher_fp = read_card(self.store, parts)["fingerprint"]
        source = self.source
        return build_cache(self.store, source.distill_rows(inference.batch_size),
                           labelled_rows=source.count("train"),
                           num_rows=distill_row_count(source),
                           teacher_parts=parts, teacher_fp=teacher_fp,
                           data_fp=self.data_fingerprint,
                           spec_hash=self.spec.spec_hash(), inference=inference, layers=layers)

    # ------------------------------------------------------------ students

    def distill(self, run_id: str | None = None, callbacks: list | None = None) -> dict:
        """Distill the student by `distill.strategy` (strategies/); `run_id` of an unfinished
        run resumes it. `callbacks` go to the trainer's RunConfig (a Tune trial passes its
        reporter)."""
        return self.strategy.distill(self, run_id or new_run_id(self.spec.name), callbacks)

    def baseline(self, run_id: str | None = None) -> dict:
        """The student's architecture on labels only, with the distilled student's budget.

        The labelled split is repeated to as many rows per epoch as the distillation set, so
        the same epochs and batch size give the same number of optimizer steps.
        """
        source = self.source
        target_rows = distill_row_count(source)
        rows = source.repeated_train_rows(target_rows, self.spec.distill.seed)
        run_id = run_id or f"{new_run_id(self.spec.name)}-baseline"
        result = self._fit(self.spec.student.model, self.spec.distill, "supervised", {},
                           "baseline", rows, self.store.uri(*self.students, run_id),
                           num_rows=target_rows)
        return self.export_student(run_id, load_weights(result)[0], "baseline",
                                   self.spec.student.model, None)

    def unfinished_runs(self) -> list[str]:
        """Run ids under `self.students` of this spec's distill runs without an exported card,
        oldest first."""
        return unfinished_runs(self.store, self.spec.name, self.students)

    # ------------------------------------------------------------ shared

    def train(self, model_spec, params, label: str, rows: ray.data.Dataset,
              parts: tuple[str, ...], callbacks: list | None = None,
              curriculum: dict | None = None, num_rows: int | None = None) -> list[dict]:
        """Train `model_spec` by `distill.strategy` with its `params` and `distill`'s budget,
        checkpoints under `parts`; the exported state dicts, the student's first."""
        d = self.spec.distill
        from_teacher = self.spec.student.init_from_teacher if label == "student" else None
        result = self._fit(model_spec, d, d.strategy, asdict(params), label, rows,
                           self.store.uri(*parts), callbacks, curriculum, num_rows, from_teacher)
        return load_weights(result)

    def _fit(self, model_spec, train_spec: TrainSpec, strategy: str, params: dict, label: str,
             train_rows: ray.data.Dataset, run_dir: str, callbacks: list | None = None,
             curriculum: dict | None = None, num_rows: int | None = None,
             from_teacher: TeacherInit | None = None):
        """`num_rows`: how many rows `train_rows` has, where counting them would read them;
        `from_teacher`: start the model from the teacher's layers."""
        splits = self.splits
        rows = num_rows if num_rows is not None else train_rows.count()
        train_ds, train_spec = ingest_rows(train_rows, train_spec, rows)
        model_spec, init_weights = self._shipped(model_spec, run_dir, from_teacher)
        job = TrainJob(
            model=model_spec.model_dump(), init_weights=init_weights,
            train=train_spec.model_dump(include=set(TrainSpec.model_fields)),
            num_features=splits.num_features, num_classes=splits.num_classes,
            rows=rows, strategy=strategy, strategy_params=params, label=label,
            curriculum=curriculum)
        val_ds = ray.data.from_arrow(to_table(splits.x_val, splits.y_val)).materialize()
        print(f"{label}: training on {job.rows} rows with {train_spec.num_workers} workers "
              f"({train_spec.ingest}) -> {run_dir}", flush=True)
        return fit(job, {"train": train_ds, "val": val_ds}, run_dir, callbacks)

    def _shipped(self, model_spec, run_dir: str,
                 from_teacher: TeacherInit | None = None) -> tuple[ModelSpec, str | None]:
        """The spec and starting weights that reach the training workers: a model read from a
        directory here (a pre-trained Hugging Face encoder) or started from the teacher's
        layers goes by its config, its weights by the store (run_dir/init/), since the workers
        may run where the directory or the teacher is not."""
        if not (isinstance(model_spec, HFSpec) and (model_spec.path or from_teacher)):
            return model_spec, None
        model = build_model(model_spec, self.splits.num_features, self.splits.num_classes)
        if from_teacher:
            teacher, _ = load_model(self.store, self.teacher_parts())
            try:
                layers = init_from_teacher(model, teacher, from_teacher.layers)
            except ValueError as err:
                raise SpecError(f"student.init_from_teacher: {err}") from None
            print(f"student: starts from the teacher's embeddings, head and layers {layers}",
                  flush=True)
        weights = io.BytesIO()
        torch.save(model.state_dict(), weights)
        Store(run_dir).write_bytes(weights.getvalue(), "init", "model.pt")
        return stored_spec(model), Store(run_dir).uri("init", "model.pt")

    def export_student(self, run_id: str, state: dict, role: str, model_spec,
                       teacher_parts: tuple[str, ...] | None,
                       parts: tuple[str, ...] | None = None) -> dict:
        """Save a trained model with its card under `parts` (default students/<run_id>).
        `teacher_parts`: the model it learned from; agreement is always measured against the
        pipeline's `teacher` (when trained), so every strategy is compared on one scale."""
        splits, spec = self.splits, self.spec
        parts = parts or (*self.students, run_id)
        model = build_model(model_spec, splits.num_features, splits.num_classes)
        model.load_state_dict(state)
        metrics = {"val_accuracy": accuracy(model, splits.x_val, splits.y_val),
                   "test_accuracy": accuracy(model, splits.x_test, splits.y_test)}
        started: dict = {}
        if latest_teacher(self.store, spec.teacher.name) is not None:
            teacher, teacher_card = load_model(self.store, self.teacher_parts())
            metrics["test_agreement"] = agreement(model, teacher, splits.x_test)
            init = spec.student.init_from_teacher
            if role == "student" and init is not None:
                started = {"init_from_teacher": {
                    "teacher_fingerprint": teacher_card["fingerprint"],
                    "layers": teacher_layers(model.model.config.num_hidden_layers,
                                             teacher.model.config.num_hidden_layers,
                                             init.layers)}}
        teacher_fp = (read_card(self.store, teacher_parts)["fingerprint"] if teacher_parts
                      else None)
        card = model_card(model, model_spec, num_features=splits.num_features,
                          num_classes=splits.num_classes,
                          class_names=list(splits.class_names), role=role, run_id=run_id,
                          strategy=spec.distill.strategy if role != "baseline" else "supervised",
                          fingerprint=fingerprint(model_spec, model),
                          teacher_fingerprint=teacher_fp, data_fingerprint=self.data_fingerprint,
                          metrics=metrics, spec=spec.model_dump(), **started)
        card = self._save(parts, model, card)
        print(f"{role}: {card['params']} params, test accuracy {metrics['test_accuracy']:.4f} "
              f"-> {self.store.uri(*parts)}", flush=True)
        return card

    def _save(self, parts: tuple[str, ...], model: nn.Module, card: dict) -> dict:
        """save_model, with a text model's tokenizer beside it (what its Serve replica reads)."""
        text = self.source.text
        if text is None:
            return save_model(self.store, parts, model, card)
        return save_model(self.store, parts, model, {**card, "tokenizer": text.card_entry()},
                          {TOKENIZER_FILE: text.rules.encode()})


def join_teacher(rows: ray.data.Dataset, other: ray.data.Dataset,
                 column: str) -> ray.data.Dataset:
    """`rows` with another teacher's logits as `column`, matched by row id."""
    other = other.select_columns(["id", "logits"]).rename_columns({"logits": column})
    return rows.join(other, join_type="inner", num_partitions=2, on=("id",))


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).argmax(dim=-1).numpy()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict(model.eval(), x) == y))


def agreement(student: nn.Module, teacher: nn.Module, x: np.ndarray) -> float:
    """Share of rows where student and teacher predict the same class."""
    return float(np.mean(predict(student.eval(), x) == predict(teacher.eval(), x)))
