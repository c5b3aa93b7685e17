"""The pipeline's stages: train-teacher, teacher-infer, distill and the label-only baseline.

Each stage reads the spec and the store and writes committed artifacts back to the store, so
stages run one by one (CLI, `ray job submit`) or chained (`quickstart`) with the same result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import ray
import torch
from torch import nn

from distillery.cache import build_cache, read_cache
from distillery.config import InferenceSpec, PipelineSpec, SpecError, TeacherSpec, TrainSpec
from distillery.data import Splits
from distillery.data.sources import load_splits
from distillery.data.splits import fixed_list_to_numpy, to_table
from distillery.models import build_model, fingerprint, load_model, model_card, save_model
from distillery.runtime import new_run_id, unfinished_runs
from distillery.storage import Store
from distillery.store_layout import (
    STUDENTS,
    has_card,
    latest_teacher,
    latest_teacher_dir,
    read_card,
    record_teacher,
    teacher_dir,
    teacher_run_dir,
)
from distillery.strategies.curriculum import difficulty, pacing_fraction, thresholds
from distillery.strategies.feature import Adapter, layer_names, output_shapes
from distillery.train import TrainJob, fit, load_weights


@dataclass
class Pipeline:
    spec: PipelineSpec
    students: tuple[str, ...] = STUDENTS
    """Where runs of distill and baseline go in the store (Tune trials: tune/<run_id>/trials)."""

    @cached_property
    def store(self) -> Store:
        return Store(self.spec.store)

    @cached_property
    def splits(self) -> Splits:
        print(f"data: loading {self.spec.data.source}", flush=True)
        return load_splits(self.spec.data)

    @cached_property
    def data_fingerprint(self) -> str:
        h = hashlib.sha256(self.spec.data.model_dump_json().encode())
        h.update(self.splits.fingerprint().encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------ teachers

    def teacher_specs(self) -> list[TeacherSpec]:
        """`teacher`, then any `distill.multi_teacher.teachers`."""
        multi = self.spec.distill.multi_teacher
        return [self.spec.teacher, *(multi.teachers if multi else [])]

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
                               to_table(splits.x_train, splits.y_train),
                               self.store.uri(*teacher_run_dir(spec.name, run_id)))
            model.load_state_dict(load_weights(result)[0])
            metrics = {"val_accuracy": result.metrics["val_accuracy"], "run_id": run_id}
        metrics["test_accuracy"] = accuracy(model, splits.x_test, splits.y_test)
        fp = fingerprint(spec.model, model)
        card = model_card(model, spec.model, num_features=splits.num_features,
                          num_classes=splits.num_classes, role="teacher", fingerprint=fp,
                          data_fingerprint=self.data_fingerprint, metrics=metrics,
                          spec=self.spec.model_dump())
        card = save_model(self.store, teacher_dir(spec.name, fp), model, card)
        record_teacher(self.store, spec.name, fp)
        print(f"train-teacher: {spec.name}: {card['params']} params, test accuracy "
              f"{metrics['test_accuracy']:.4f} -> {self.store.uri(*teacher_dir(spec.name, fp))}",
              flush=True)
        return card

    # ------------------------------------------------------------ cache

    def teacher_infer(self) -> dict | None:
        """Build (or reuse) the cache of every teacher the strategy reads; returns the manifest
        of `teacher`'s (None for online distillation, which has no teacher)."""
        manifests = self._teacher_caches()
        return manifests[0] if manifests else None

    def _teacher_caches(self) -> list[dict]:
        d = self.spec.distill
        if d.strategy == "online":
            print("teacher-infer: online distillation has no teacher; nothing to cache",
                  flush=True)
            return []
        layers = ([p.teacher for p in d.feature.pairs]
                  if d.strategy == "feature" and d.feature.cache else [])
        return [self._cache(self.teacher_parts(t.name), t.inference, layers if i == 0 else [])
                for i, t in enumerate(self.teacher_specs())]

    def _cache(self, parts: tuple[str, ...], inference: InferenceSpec,
               layers: list[str] = ()) -> dict:
        teacher_fp = read_card(self.store, parts)["fingerprint"]
        return build_cache(self.store, self.splits.distill_rows(), teacher_parts=parts,
                           teacher_fp=teacher_fp, data_fp=self.data_fingerprint,
                           spec_hash=self.spec.spec_hash(), inference=inference, layers=layers)

    # ------------------------------------------------------------ students

    def distill(self, run_id: str | None = None, callbacks: list | None = None) -> dict:
        """Distill the student by `distill.strategy`; `run_id` of an unfinished run resumes it.
        `callbacks` go to the trainer's RunConfig (a Tune trial passes its reporter)."""
        d = self.spec.distill
        run_id = run_id or new_run_id(self.spec.name)
        if d.strategy == "online":
            return self._distill_online(run_id, callbacks)
        if d.strategy == "progressive":
            return self._distill_progressive(run_id, callbacks)
        params = self._strategy_params()
        manifests = self._teacher_caches()
        rows = read_cache(self.store, manifests[0]["key"])
        for i, extra in enumerate(manifests[1:], start=1):
            rows = join_teacher(rows, read_cache(self.store, extra["key"]), f"logits_{i}")
        result = self._fit(self.spec.student.model, d, d.strategy, params, "student", rows,
                           self.store.uri(*self.students, run_id), callbacks)
        return self._export_student(run_id, load_weights(result)[0], "student",
                                    self.spec.student.model, self.teacher_parts())

    def _strategy_params(self) -> dict:
        """What the trainer's strategy is built from; feature pairs are checked here, before
        any Ray work."""
        d = self.spec.distill
        params = self._kd_params()
        if d.strategy == "feature":
            student_shapes, teacher_shapes = self._feature_shapes()
            params.update(
                pairs=[p.model_dump() for p in d.feature.pairs],
                student_shapes=student_shapes, teacher_shapes=teacher_shapes,
                live_teacher=None if d.feature.cache else (self.store.root,
                                                           list(self.teacher_parts())))
        if d.strategy == "multi_teacher":
            m = d.multi_teacher
            params.update(num_teachers=len(m.teachers) + 1, weighting=m.weighting,
                          teacher_weights=m.weights)
        return params

    def _kd_params(self) -> dict:
        """What every distilling strategy takes: the KD temperature, weight and divergence."""
        d = self.spec.distill
        return {"temperature": d.temperature, "alpha": d.alpha, "kl": d.kl}

    def _feature_shapes(self) -> tuple[dict, dict]:
        """Output shapes of the paired student and teacher layers; a SpecError naming the pair
        when a layer does not exist or no adapter can bridge the two."""
        splits, pairs = self.splits, self.spec.distill.feature.pairs
        models = {
            "student": build_model(self.spec.student.model, splits.num_features,
                                   splits.num_classes),
            "teacher": load_model(self.store, self.teacher_parts())[0],
        }
        shapes: dict[str, dict] = {"student": {}, "teacher": {}}
        for i, pair in enumerate(pairs):
            for role, model in models.items():
                layer, names = getattr(pair, role), layer_names(model)
                if layer not in names:
                    raise SpecError(f"distill.feature.pairs.{i}.{role}: no layer {layer!r} in "
                                    f"the {role}; valid: {names}")
                shapes[role].update(output_shapes(model, [layer], splits.num_features))
            try:
                Adapter(shapes["student"][pair.student], shapes["teacher"][pair.teacher])
            except ValueError as err:
                raise SpecError(f"distill.feature.pairs.{i}: {err}") from None
        return shapes["student"], shapes["teacher"]

    def _distill_progressive(self, run_id: str, callbacks: list | None) -> dict:
        """teacher -> assistant 0 -> ... -> student; each stage a response-KD run on the
        previous stage's cache, with the curriculum if one is given. Finished stages are kept,
        so a resumed chain restarts at its first unfinished stage."""
        d = self.spec.distill
        params = self._kd_params()
        teacher = self.teacher_parts()
        stages = [((*self.students, run_id, "assistants", str(i)), spec, f"assistant {i}")
                  for i, spec in enumerate(d.progressive.assistants)]
        stages.append(((*self.students, run_id), self.spec.student.model, "student"))
        for parts, model_spec, label in stages:
            if not has_card(self.store, parts):
                manifest = self._cache(teacher, self.spec.teacher.inference)
                curriculum = (self._curriculum(manifest["key"]) if d.progressive.curriculum
                              else None)
                # a Tune trial ranks the chain by its student, not by an assistant's epochs
                result = self._fit(model_spec, d, "response", params, label,
                                   read_cache(self.store, manifest["key"]),
                                   self.store.uri(*parts),
                                   callbacks if label == "student" else None, curriculum)
                role = "student" if label == "student" else "assistant"
                self._export_student(run_id, load_weights(result)[0], role, model_spec,
                                     teacher, parts)
            teacher = parts
        return read_card(self.store, (*self.students, run_id))

    def _curriculum(self, cache_key_: str) -> dict:
        """Per-epoch difficulty thresholds from the teacher's outputs on every cached row."""
        c, epochs = self.spec.distill.progressive.curriculum, self.spec.distill.epochs
        scores = []
        for batch in read_cache(self.store, cache_key_).select_columns(
                ["logits", "label"]).iter_batches(batch_size=65_536, batch_format="pyarrow"):
            # copies: Arrow's buffers are read-only, which torch.from_numpy warns about
            logits = torch.tensor(fixed_list_to_numpy(batch["logits"]))
            labels = torch.tensor(batch["label"].fill_null(-1).to_numpy(zero_copy_only=False))
            scores.append(difficulty(logits, labels, c.score).numpy())
        fractions = [pacing_fraction(e, epochs, c.pacing, c.start, c.full_at)
                     for e in range(epochs)]
        print("curriculum: share of rows per epoch "
              + " ".join(f"{f:.2f}" for f in fractions), flush=True)
        return {"score": c.score, "thresholds": thresholds(np.concatenate(scores), fractions)}

    def _distill_online(self, run_id: str, callbacks: list | None) -> dict:
        """Deep mutual learning of the student and `online.peers` on the distillation rows;
        every peer is exported under peers/<k>/, and the best on validation of those with the
        student's architecture is the student."""
        d, splits = self.spec.distill, self.splits
        specs = [self.spec.student.model, *d.online.peers]
        params = {**self._kd_params(),
                  "peers": [p.model_dump() for p in d.online.peers],
                  "num_features": splits.num_features, "num_classes": splits.num_classes}
        result = self._fit(self.spec.student.model, d, "online", params, "online",
                           splits.distill_rows(), self.store.uri(*self.students, run_id), callbacks)
        states = load_weights(result)
        val = []
        for k, (spec, state) in enumerate(zip(specs, states, strict=True)):
            card = self._export_student(run_id, state, "peer", spec, None,
                                        (*self.students, run_id, "peers", str(k)))
            val.append(card["metrics"]["val_accuracy"])
        # a bigger peer may win on validation, but the student is what fits the budget
        best = max((k for k, spec in enumerate(specs) if spec == specs[0]), key=val.__getitem__)
        print(f"online: peer validation accuracies {[round(v, 4) for v in val]}; "
              f"peer {best} is the student (the best with the student's architecture)",
              flush=True)
        return self._export_student(run_id, states[best], "student", specs[best], None)

    def baseline(self, run_id: str | None = None) -> dict:
        """The student's architecture on labels only, with the distilled student's budget.

        The labelled split is repeated to as many rows per epoch as the distillation set, so
        the same epochs and batch size give the same number of optimizer steps.
        """
        splits = self.splits
        target_rows = splits.num_distill_rows
        repeats = -(-target_rows // len(splits.x_train))
        order = np.random.default_rng(self.spec.distill.seed).permutation(
            np.tile(np.arange(len(splits.x_train)), repeats))[:target_rows]
        rows = to_table(splits.x_train[order], splits.y_train[order])
        run_id = run_id or f"{new_run_id(self.spec.name)}-baseline"
        result = self._fit(self.spec.student.model, self.spec.distill, "supervised", {},
                           "baseline", rows, self.store.uri(*self.students, run_id))
        return self._export_student(run_id, load_weights(result)[0], "baseline",
                                    self.spec.student.model, None)

    def unfinished_runs(self) -> list[str]:
        """Run ids under `self.students` of this spec's distill runs without an exported card,
        oldest first."""
        return unfinished_runs(self.store, self.spec.name, self.students)

    # ------------------------------------------------------------ shared

    def _fit(self, model_spec, train_spec: TrainSpec, strategy: str, params: dict, label: str,
             train_rows, run_dir: str, callbacks: list | None = None,
             curriculum: dict | None = None):
        splits = self.splits
        train_ds = (train_rows if isinstance(train_rows, ray.data.Dataset)
                    else ray.data.from_arrow(train_rows))
        # Materialized before the trainer takes its CPUs, so reading never waits on them.
        train_ds = train_ds.materialize()
        job = TrainJob(
            model=model_spec.model_dump(),
            train=train_spec.model_dump(include=set(TrainSpec.model_fields)),
            num_features=splits.num_features, num_classes=splits.num_classes,
            rows=train_ds.count(), strategy=strategy, strategy_params=params, label=label,
            curriculum=curriculum)
        val_ds = ray.data.from_arrow(to_table(splits.x_val, splits.y_val)).materialize()
        print(f"{label}: training on {job.rows} rows with {train_spec.num_workers} workers "
              f"-> {run_dir}", flush=True)
        return fit(job, {"train": train_ds, "val": val_ds}, run_dir, callbacks)

    def _export_student(self, run_id: str, state: dict, role: str, model_spec,
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
        if latest_teacher(self.store, spec.teacher.name) is not None:
            teacher, _ = load_model(self.store, self.teacher_parts())
            metrics["test_agreement"] = agreement(model, teacher, splits.x_test)
        teacher_fp = (read_card(self.store, teacher_parts)["fingerprint"] if teacher_parts
                      else None)
        card = model_card(model, model_spec, num_features=splits.num_features,
                          num_classes=splits.num_classes, role=role, run_id=run_id,
                          strategy=spec.distill.strategy if role != "baseline" else "supervised",
                          fingerprint=fingerprint(model_spec, model),
                          teacher_fingerprint=teacher_fp, data_fingerprint=self.data_fingerprint,
                          metrics=metrics, spec=spec.model_dump())
        card = save_model(self.store, parts, model, card)
        print(f"{role}: {card['params']} params, test accuracy {metrics['test_accuracy']:.4f} "
              f"-> {self.store.uri(*parts)}", flush=True)
        return card


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
