"""The pipeline's stages: train-teacher, teacher-infer, distill and the label-only baseline.

Each stage reads the spec and the store and writes committed artifacts back to the store, so
stages run one by one (CLI, `ray job submit`) or chained (`quickstart`) with the same result.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import ray
import torch
from torch import nn

from distillery.cache import build_cache, cache_key, read_cache
from distillery.config import PipelineSpec, TrainSpec
from distillery.data import Splits, load_splits
from distillery.data.splits import to_table
from distillery.models import build_model, fingerprint, load_model, model_card, save_model
from distillery.runtime import new_run_id
from distillery.storage import Store
from distillery.train import TrainJob, fit, load_weights

LATEST = "latest.json"


@dataclass
class Pipeline:
    spec: PipelineSpec

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

    # ------------------------------------------------------------ teacher

    def teacher_parts(self) -> tuple[str, ...]:
        name = self.spec.teacher.name
        if not self.store.exists("teachers", name, LATEST):
            raise FileNotFoundError(
                f"no teacher {name!r} in {self.store.root}; run `distillery train-teacher` first")
        return ("teachers", name, self.store.read_json("teachers", name, LATEST)["fingerprint"])

    def train_teacher(self) -> dict:
        """Train (or import a pretrained) teacher; store it under its fingerprint."""
        spec, splits = self.spec.teacher, self.splits
        model = build_model(spec.model, splits.num_features, splits.num_classes)
        metrics: dict = {}
        if not spec.pretrained:
            run_id = new_run_id(spec.name)
            result = self._fit(spec.model, spec.train, "supervised", {}, "teacher",
                               to_table(splits.x_train, splits.y_train),
                               self.store.uri("teachers", spec.name, "runs", run_id))
            model.load_state_dict(load_weights(result))
            metrics = {"val_accuracy": result.metrics["val_accuracy"], "run_id": run_id}
        metrics["test_accuracy"] = accuracy(model, splits.x_test, splits.y_test)
        fp = fingerprint(spec.model, model)
        card = model_card(model, spec.model, num_features=splits.num_features,
                          num_classes=splits.num_classes, role="teacher", fingerprint=fp,
                          data_fingerprint=self.data_fingerprint, metrics=metrics,
                          spec=self.spec.model_dump())
        card = save_model(self.store, ("teachers", spec.name, fp), model, card)
        self.store.write_json({"fingerprint": fp}, "teachers", spec.name, LATEST)
        print(f"train-teacher: {card['params']} params, test accuracy "
              f"{metrics['test_accuracy']:.4f} -> {self.store.uri('teachers', spec.name, fp)}",
              flush=True)
        return card

    # ------------------------------------------------------------ cache

    def teacher_infer(self) -> dict:
        parts = self.teacher_parts()
        return build_cache(self.store, self.splits.distill_rows(), teacher_parts=parts,
                           teacher_fp=parts[-1], data_fp=self.data_fingerprint,
                           spec_hash=self.spec.spec_hash(), inference=self.spec.teacher.inference)

    # ------------------------------------------------------------ students

    def distill(self, run_id: str | None = None, callbacks: list | None = None) -> dict:
        """Distill the student from the cache; `run_id` of an unfinished run resumes it.
        `callbacks` go to the trainer's RunConfig (a Tune trial passes its reporter)."""
        manifest = self.teacher_infer()
        key = cache_key(manifest["teacher_fingerprint"], manifest["data_fingerprint"])
        d = self.spec.distill
        run_id = run_id or new_run_id(self.spec.name)
        result = self._fit(self.spec.student.model, d, d.strategy,
                           {"temperature": d.temperature, "alpha": d.alpha}, "student",
                           read_cache(self.store, key), self.store.uri("students", run_id),
                           callbacks)
        return self._export_student(run_id, result, "student", manifest["teacher_fingerprint"])

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
                           "baseline", rows, self.store.uri("students", run_id))
        return self._export_student(run_id, result, "baseline", None)

    def unfinished_runs(self) -> list[str]:
        """students/<run_id> of this spec's distill runs without an exported card, oldest first."""
        pattern = re.compile(rf"{re.escape(self.spec.name)}-\d{{8}}-\d{{6}}-[0-9a-f]{{4}}")
        return [r for r in self.store.listdir("students") if pattern.fullmatch(r)
                and not self.store.exists("students", r, "card.json")]

    # ------------------------------------------------------------ shared

    def _fit(self, model_spec, train_spec: TrainSpec, strategy: str, params: dict, label: str,
             train_rows, run_dir: str, callbacks: list | None = None):
        splits = self.splits
        train_ds = (train_rows if isinstance(train_rows, ray.data.Dataset)
                    else ray.data.from_arrow(train_rows))
        # Materialized before the trainer takes its CPUs, so reading never waits on them.
        train_ds = train_ds.materialize()
        job = TrainJob(
            model=model_spec.model_dump(),
            train=train_spec.model_dump(include=set(TrainSpec.model_fields)),
            num_features=splits.num_features, num_classes=splits.num_classes,
            rows=train_ds.count(), strategy=strategy, strategy_params=params, label=label)
        val_ds = ray.data.from_arrow(to_table(splits.x_val, splits.y_val)).materialize()
        print(f"{label}: training on {job.rows} rows with {train_spec.num_workers} workers "
              f"-> {run_dir}", flush=True)
        return fit(job, {"train": train_ds, "val": val_ds}, run_dir, callbacks)

    def _export_student(self, run_id: str, result, role: str, teacher_fp: str | None) -> dict:
        splits, spec = self.splits, self.spec
        model = build_model(spec.student.model, splits.num_features, splits.num_classes)
        model.load_state_dict(load_weights(result))
        metrics = {"val_accuracy": result.metrics["val_accuracy"],
                   "test_accuracy": accuracy(model, splits.x_test, splits.y_test)}
        if teacher_fp:
            teacher, _ = load_model(self.store, self.teacher_parts())
            metrics["test_agreement"] = agreement(model, teacher, splits.x_test)
        card = model_card(model, spec.student.model, num_features=splits.num_features,
                          num_classes=splits.num_classes, role=role, run_id=run_id,
                          teacher_fingerprint=teacher_fp, data_fingerprint=self.data_fingerprint,
                          metrics=metrics, spec=spec.model_dump())
        card = save_model(self.store, ("students", run_id), model, card)
        print(f"{role}: {card['params']} params, test accuracy {metrics['test_accuracy']:.4f} "
              f"-> {self.store.uri('students', run_id)}", flush=True)
        return card


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).argmax(dim=-1).numpy()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict(model.eval(), x) == y))


def agreement(student: nn.Module, teacher: nn.Module, x: np.ndarray) -> float:
    """Share of rows where student and teacher predict the same class."""
    return float(np.mean(predict(student.eval(), x) == predict(teacher.eval(), x)))
