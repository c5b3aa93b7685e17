"""The pipeline spec: typed, validated once at the edge.

`load_spec(path, overrides)` reads one YAML file, applies `--set a.b=value` overrides and
returns a `PipelineSpec`. Anything wrong fails here, before any Ray work, with a `SpecError`
whose one-line message names the field path (`distill.temperature: must be > 0, got -1`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from distillery.storage import is_remote, path_exists


class SpecError(ValueError):
    """A pipeline spec is invalid; the message is one line naming the field path."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- models

class MLPSpec(Strict):
    arch: Literal["mlp"]
    hidden: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [64])
    """Widths of the hidden layers, input to output."""


class CNN1DSpec(Strict):
    arch: Literal["cnn1d"]
    channels: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    """Output channels of each conv layer; layers after the first halve the length (stride 2)."""
    kernel_size: int = Field(default=5, gt=0)
    """Kernel of the first conv layer; later layers use 3."""
    hidden: int = Field(default=0, ge=0)
    """Width of the dense layer before the classifier; 0 = global average pooling instead."""


class ImportSpec(Strict):
    arch: Literal["import"]
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """`package.module:function` returning a torch.nn.Module."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    """Optional state_dict file (loaded with weights_only=True) for a pretrained model."""


class TorchScriptSpec(Strict):
    arch: Literal["torchscript"]
    path: str
    """A TorchScript file (torch.jit.save); the model is taken as trained."""


ModelSpec = Annotated[
    MLPSpec | CNN1DSpec | ImportSpec | TorchScriptSpec, Field(discriminator="arch")
]
_MODEL_SPEC = TypeAdapter(ModelSpec)


def parse_model_spec(raw: dict) -> MLPSpec | CNN1DSpec | ImportSpec | TorchScriptSpec:
    """A model spec from its dict form (as stored in card.json and sent to workers)."""
    return _MODEL_SPEC.validate_python(raw)


# ---------------------------------------------------------------- data

class Mnist1dTransfer(Strict):
    num_samples: int = Field(default=50_000, ge=10)
    """Rounded down to a multiple of 10: the generator makes equally many of each class."""
    seed: int = 7
    """Generator seed; any seed other than the labelled set's gives unseen, unlabeled rows."""


class Mnist1dData(Strict):
    source: Literal["mnist1d"]
    num_samples: int = Field(default=5000, ge=100)
    """Rows generated (rounded down to a multiple of 10); the canonical benchmark is 5000
    (4000 train / 1000 test)."""
    seed: int = 42
    """42 is the canonical MNIST-1D dataset."""
    train_split: float = Field(default=0.8, gt=0, lt=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    """Share of the train split held out for per-epoch validation."""
    transfer: Mnist1dTransfer | None = None
    """Unlabeled transfer set the teacher labels for distillation."""


class TableTransfer(Strict):
    path: str
    """Parquet/CSV file or directory (local or s3://) with the feature columns, no labels needed."""


class TableData(Strict):
    source: Literal["parquet", "csv"]
    path: str
    """File or directory, local or s3://."""
    features: list[str] = Field(min_length=1)
    label: str
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = 0
    """Seed of the deterministic train/val/test split."""
    transfer: TableTransfer | None = None


DataSpec = Annotated[Mnist1dData | TableData, Field(discriminator="source")]


# ---------------------------------------------------------------- training

class TrainSpec(Strict):
    epochs: int = Field(default=10, gt=0)
    batch_size: int = Field(default=256, gt=0)
    """Global batch size; each of num_workers workers gets batch_size / num_workers."""
    lr: float = Field(default=1e-2, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    num_workers: int = Field(default=2, gt=0)
    """Ray Train workers, each with its own DeepSpeed engine."""
    cpus_per_worker: float = Field(default=1.0, gt=0)
    resources: dict[str, float] = Field(default_factory=dict)
    """Extra Ray resources per worker, e.g. a custom resource that pins training to nodes
    started with `ray start --resources='{"trainer": 4}'`."""
    use_gpu: bool | Literal["auto"] = "auto"
    """auto: GPU when the cluster has one."""
    zero_stage: int = Field(default=0, ge=0, le=3)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    checkpoint_every: int = Field(default=1, gt=0)
    """Epochs between checkpoints (the last epoch is always checkpointed); a crash redoes at
    most this many epochs."""
    max_failures: int = Field(default=1, ge=-1)
    """Worker failures Ray Train recovers from (from the last checkpoint); -1 = unlimited."""
    seed: int = 0

    @model_validator(mode="after")
    def _divisible_batch(self) -> TrainSpec:
        if self.batch_size % self.num_workers:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of num_workers "
                             f"{self.num_workers} (each worker takes an equal share)")
        return self


class InferenceSpec(Strict):
    batch_size: int = Field(default=4096, gt=0)
    concurrency: tuple[int, int] = (1, 2)
    """(min, max) actors in the autoscaling pool."""
    cpus_per_actor: float = Field(default=0.5, gt=0)
    """Fractional, so that read and write tasks still get CPUs on a small machine."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Extra Ray resources per actor, e.g. a custom resource that pins inference to nodes."""

    @model_validator(mode="after")
    def _ordered(self) -> InferenceSpec:
        lo, hi = self.concurrency
        if not 1 <= lo <= hi:
            raise ValueError(f"concurrency must be (min, max) with 1 <= min <= max, got {lo, hi}")
        return self


class TeacherSpec(Strict):
    name: str = Field(default="teacher", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSpec
    train: TrainSpec | None = None
    """How train-teacher trains it; omit for a pretrained (TorchScript or weights) teacher."""
    inference: InferenceSpec = Field(default_factory=InferenceSpec)

    @property
    def pretrained(self) -> bool:
        return isinstance(self.model, TorchScriptSpec) or (
            isinstance(self.model, ImportSpec) and self.model.weights is not None)

    @model_validator(mode="after")
    def _trainable(self) -> TeacherSpec:
        if self.train is None and not self.pretrained:
            raise ValueError("train is required unless the model is pretrained "
                             "(arch: torchscript, or arch: import with weights)")
        if self.train is not None and self.pretrained:
            raise ValueError("train must be omitted for a pretrained model: it would be ignored")
        return self


class StudentSpec(Strict):
    model: ModelSpec


class DistillSpec(TrainSpec):
    strategy: Literal["response"] = "response"
    temperature: float = Field(default=4.0, gt=0)
    """Softens both distributions; the KD term is scaled by T^2 (Hinton et al. 2015)."""
    alpha: float = Field(default=0.9, ge=0, le=1)
    """Weight of the KD term; 1 - alpha weighs the task (cross-entropy) term."""


class PipelineSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    store: str = "./runs"
    """Root of every artifact: a local directory or s3://bucket/prefix."""
    data: DataSpec
    teacher: TeacherSpec
    student: StudentSpec
    distill: DistillSpec = Field(default_factory=DistillSpec)

    def spec_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading

def load_spec(path: str | Path, overrides: list[str] = ()) -> PipelineSpec:
    """Read, override and validate a pipeline spec; raise SpecError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"--config: file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    spec = validate_spec(raw)
    check_inputs(spec)
    return spec


def validate_spec(raw: dict) -> PipelineSpec:
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise SpecError(_describe(raw, first)) from None


def apply_override(raw: dict, item: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to the raw spec dict in place."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {item}: expected key.path=value")
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {item}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = yaml.safe_load(value) if value else ""


def check_inputs(spec: PipelineSpec) -> None:
    """Local input files must exist and factories import; remote files are checked when read."""
    candidates = []
    if isinstance(spec.data, TableData):
        candidates.append(("data.path", spec.data.path))
        if spec.data.transfer:
            candidates.append(("data.transfer.path", spec.data.transfer.path))
    for role in ("teacher", "student"):
        model = getattr(spec, role).model
        if isinstance(model, TorchScriptSpec):
            candidates.append((f"{role}.model.path", model.path))
        if isinstance(model, ImportSpec):
            _check_factory(f"{role}.model.factory", model.factory)
            if model.weights:
                candidates.append((f"{role}.model.weights", model.weights))
    for field, location in candidates:
        if not is_remote(location) and not path_exists(location):
            raise SpecError(f"{field}: file not found: {location}")


def _check_factory(field: str, factory: str) -> None:
    module_name, func = factory.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SpecError(f"{field}: cannot import {module_name!r}: {err}") from None
    if not callable(getattr(module, func, None)):
        raise SpecError(f"{field}: {module_name!r} has no callable {func!r}")


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "extra_forbidden": "unknown key",
    "missing": "required field is missing",
}


def _describe(raw: Any, error: dict) -> str:
    path = _input_path(raw, error["loc"])
    if error["type"] == "union_tag_invalid":
        ctx = error["ctx"]
        field = ctx["discriminator"].strip("'")
        return (f"{path}.{field}: unknown {error['input'].get(field)!r}; "
                f"valid: {ctx['expected_tags']}")
    template = _MESSAGES.get(error["type"])
    reason = template.format(**error.get("ctx", {})) if template else error["msg"]
    reason = reason.removeprefix("Value error, ")
    if error["type"] not in ("missing", "extra_forbidden"):
        reason += f", got {json.dumps(error['input'], default=str)}"
    return f"{path or '<spec>'}: {reason}"


def _input_path(raw: Any, loc: tuple) -> str:
    """Field path as the user wrote it: pydantic's loc also holds union tags, which we drop."""
    parts, node = [], raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            parts.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            parts.append(str(part))
            node = node[part]
        elif not (isinstance(node, dict) and isinstance(part, str) and part not in node
                  and _is_union_tag(node, part)):
            parts.append(str(part))
            node = None
    return ".".join(parts)


def _is_union_tag(node: dict, part: str) -> bool:
    return part in (node.get("arch"), node.get("source"))
