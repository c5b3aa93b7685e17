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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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


class FeaturePair(Strict):
    student: str = Field(min_length=1)
    """Module name in the student (as `named_modules()` lists it), e.g. `features.3`."""
    teacher: str = Field(min_length=1)
    """Module name in the teacher whose output the student's should match."""
    loss: Literal["mse", "cosine"] = "mse"
    weight: float = Field(default=1.0, gt=0)


class FeatureSpec(Strict):
    pairs: list[FeaturePair] = Field(min_length=1)
    """Student layer -> teacher layer; a learned adapter per pair (1x1 conv for channel maps,
    linear for vectors) projects the student's width onto the teacher's. Adapters are trained
    with the student and dropped at export."""
    cache: bool = True
    """True: teacher-infer writes the mapped teacher layers into the cache; False: every
    training worker runs the teacher forward live for them (no cache growth)."""


class CurriculumSpec(Strict):
    score: Literal["entropy", "loss"] = "entropy"
    """Difficulty of a row by the teacher: entropy of its prediction, or its cross-entropy on
    the label (unlabeled rows fall back to entropy)."""
    pacing: Literal["linear", "root", "step"] = "linear"
    """How the share of rows in play grows from `start` to 1 (Hacohen & Weinshall 2019)."""
    start: float = Field(default=0.3, gt=0, le=1)
    """Share of the easiest rows used in the first epoch."""
    full_at: float = Field(default=0.5, gt=0, le=1)
    """Share of the epochs after which every row is used."""


class ProgressiveSpec(Strict):
    assistants: list[ModelSpec] = Field(default_factory=list)
    """Teacher-assistant chain, largest first (Mirzadeh et al. 2020): teacher -> TA1 -> ... ->
    student, each stage a distill run whose student teaches the next stage."""
    curriculum: CurriculumSpec | None = None
    """Easy rows first, by the stage's teacher (Bengio et al. 2009)."""

    @model_validator(mode="after")
    def _assistants_or_curriculum(self) -> ProgressiveSpec:
        if not self.assistants and self.curriculum is None:
            raise ValueError("give assistants, a curriculum, or both")
        return self


class MultiTeacherSpec(Strict):
    teachers: list[TeacherSpec] = Field(min_length=1)
    """Teachers besides `teacher`, each trained by train-teacher and cached by teacher-infer."""
    weighting: Literal["fixed", "confidence"] = "fixed"
    """fixed: `weights`; confidence: per example, by each teacher's top-1 probability."""
    weights: list[Annotated[float, Field(ge=0)]] | None = None
    """Fixed weights of [teacher, *teachers]; equal when omitted. Normalized to sum to 1."""

    @model_validator(mode="after")
    def _weights(self) -> MultiTeacherSpec:
        if self.weights is not None:
            if len(self.weights) != len(self.teachers) + 1:
                raise ValueError(f"weights needs {len(self.teachers) + 1} values (teacher and "
                                 f"each of teachers), got {len(self.weights)}")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be 0")
        return self


class OnlineSpec(Strict):
    peers: list[ModelSpec] = Field(min_length=1)
    """Models trained together with the student (deep mutual learning, Zhang et al. 2018); no
    pre-trained teacher. Peers may be bigger (an online teacher) or the student's size. Every
    peer is exported; the best on validation with the student's architecture is the student."""


STRATEGY_SECTIONS = ("feature", "progressive", "multi_teacher", "online")
"""Strategies with a section of their own in `distill`, named as the strategy."""


class DistillSpec(TrainSpec):
    strategy: Literal["response", "feature", "progressive", "multi_teacher", "online"] = (
        "response")
    """How knowledge is transferred; every strategy but `online` adds a KD term to the
    teacher's outputs, and feature/progressive/multi_teacher/online take their section below."""
    temperature: float = Field(default=4.0, gt=0)
    """Softens both distributions; the KD term is scaled by T^2 (Hinton et al. 2015)."""
    alpha: float = Field(default=0.9, ge=0, le=1)
    """Weight of the KD (online: mutual) term; 1 - alpha weighs the task term."""
    kl: Literal["forward", "reverse", "jsd"] = "forward"
    """KD divergence: forward KL(teacher || student), reverse KL(student || teacher), or
    Jensen-Shannon."""
    feature: FeatureSpec | None = None
    progressive: ProgressiveSpec | None = None
    multi_teacher: MultiTeacherSpec | None = None
    online: OnlineSpec | None = None

    @model_validator(mode="after")
    def _strategy_section(self) -> DistillSpec:
        for name in STRATEGY_SECTIONS:
            given = getattr(self, name) is not None
            if name == self.strategy and not given:
                raise ValueError(f"strategy {name} needs its `{name}` section")
            if given and name != self.strategy:
                raise ValueError(f"`{name}` is only used with strategy {name}, "
                                 f"not {self.strategy}")
        return self


# ---------------------------------------------------------------- evaluation

GENERATOR_SHIFTS = {"iid_noise": "iid_noise_scale", "corr_noise": "corr_noise_scale",
                    "translation": "max_translation", "scale": "scale_coeff"}
"""MNIST-1D shift kinds -> the argument of the mnist1d generator (get_dataset_args) they set."""


class ShiftSpec(Strict):
    kind: Literal["iid_noise", "corr_noise", "translation", "scale", "gaussian_noise",
                  "feature_dropout", "scaling"]
    """mnist1d data only: iid_noise, corr_noise, translation and scale regenerate the test split
    with the generator's iid_noise_scale, corr_noise_scale, max_translation or scale_coeff set to
    each severity (its defaults: 0.02, 0.25, 48, 0.4). Any data: gaussian_noise adds noise with
    sigma = severity x each feature's train std; feature_dropout replaces that share of the
    values by the feature's train mean; scaling multiplies every feature by the severity."""
    severities: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    """Values of the shift's parameter, mildest first; the report plots accuracy against them."""

    @model_validator(mode="after")
    def _in_range(self) -> ShiftSpec:
        for value in self.severities:
            if self.kind == "translation" and (value != int(value) or value < 1):
                raise ValueError(f"translation severities are max_translation values, whole "
                                 f"numbers >= 1, got {value}")
            if self.kind == "scale" and value >= 2:
                raise ValueError(f"scale severities must be < 2 (the generator scales each "
                                 f"signal by 1 + scale_coeff * (u - 0.5)), got {value}")
            if self.kind == "feature_dropout" and value > 1:
                raise ValueError(f"feature_dropout severities are shares, <= 1, got {value}")
        return self


class LatencySpec(Strict):
    batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 1024],
                                                          min_length=1)
    """Batch sizes timed; the largest also measures throughput gates and peak memory."""
    warmup: int = Field(default=10, ge=0)
    """Untimed runs before timing, per batch size (allocator and kernel caches warm up)."""
    repetitions: int = Field(default=200, ge=5)
    """Timed runs per batch size, at most; percentiles are over these."""
    seconds: float = Field(default=2.0, gt=0)
    """Time budget per model and batch size: timing stops after `repetitions` runs or once
    this many seconds are spent (but never before 5 runs), whichever comes first."""


class GatesSpec(Strict):
    """Thresholds every evaluated model of role `student` must meet; unset gates are skipped."""

    min_accuracy_ratio: float | None = Field(default=None, gt=0)
    """Student test accuracy / teacher test accuracy, at least."""
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    """Top-1 agreement with the teacher on the test split, at least."""
    max_ece: float | None = Field(default=None, ge=0, le=1)
    """Expected calibration error on the test split (before temperature scaling), at most."""
    min_speedup: float | None = Field(default=None, gt=0)
    """Student / teacher throughput (rows/s) at the largest latency batch size, at least."""


class EvaluateSpec(Strict):
    shifts: list[ShiftSpec] = Field(default_factory=list)
    """The robustness suite: each shift is applied to the test split at every severity."""
    top_k: int = Field(default=3, gt=0)
    """k of the top-k accuracy (capped at the number of classes)."""
    latency: LatencySpec = Field(default_factory=LatencySpec)
    """Efficiency timings; each model is timed alone, single-threaded, in a fresh process."""
    gates: GatesSpec = Field(default_factory=GatesSpec)
    """Pass/fail thresholds; a failing gate makes `distillery evaluate` exit non-zero."""


# ---------------------------------------------------------------- tuning

class SearchDim(Strict):
    """How one spec field is searched; the bounds are checked against the field's own range
    (distillery.tuning.check_space) before any Ray work."""

    type: Literal["uniform", "loguniform", "choice"]
    """uniform: evenly between lower and upper; loguniform: evenly in log space, for scale
    parameters (temperature, learning rate); choice: one of `values`."""
    lower: float | None = None
    upper: float | None = None
    values: list[Any] | None = None
    """choice only: values the field accepts (numbers, strings; lists and mappings too, except
    with search_alg optuna)."""

    @model_validator(mode="after")
    def _consistent(self) -> SearchDim:
        if self.type == "choice":
            if not self.values or self.lower is not None or self.upper is not None:
                raise ValueError("choice takes a non-empty `values` list and no lower/upper")
            return self
        if self.values is not None or self.lower is None or self.upper is None:
            raise ValueError(f"{self.type} takes lower and upper, and no values")
        if self.upper <= self.lower:
            raise ValueError(f"upper {self.upper} must be > lower {self.lower}")
        if self.type == "loguniform" and self.lower <= 0:
            raise ValueError(f"loguniform needs lower > 0, got {self.lower}")
        return self


class SchedulerSpec(Strict):
    type: Literal["asha", "fifo"] = "asha"
    """asha: asynchronous successive halving (Li et al. 2020) stops trials whose metric trails
    the others' at each rung; fifo: every trial runs all its epochs."""
    grace_period: int = Field(default=1, gt=0)
    """asha: epochs every trial runs before it can be stopped."""
    reduction_factor: float = Field(default=2, gt=1)
    """asha: rungs at grace_period x reduction_factor^k epochs each keep the top
    1 / reduction_factor of the trials that reach them."""

    @model_validator(mode="after")
    def _fifo_alone(self) -> SchedulerSpec:
        if self.type == "fifo" and self.model_fields_set - {"type"}:
            raise ValueError("grace_period and reduction_factor are asha settings; fifo takes "
                             "none")
        return self


class TuneSpec(Strict):
    space: dict[str, SearchDim] = Field(min_length=1)
    """Spec field path -> how to search it, e.g. `distill.temperature: {type: loguniform,
    lower: 1, upper: 16}`. `distill.*` and `student.*` fields only: every trial reads the same
    teacher and logit cache. The spec's own values must lie in the space: the first trial
    evaluates them, the baseline the best trial is compared with."""
    metric: Literal["val_accuracy"] = "val_accuracy"
    """Per-epoch metric that ranks trials, maximised. Agreement with the teacher is not
    reported per epoch yet; each completed trial's card has test_agreement."""
    pareto: bool = False
    """Multi-objective: maximise the metric and minimise the student's parameter count, and
    report the Pareto set; for spaces over `student.model.*`. Needs scheduler fifo: ASHA ranks
    by the metric alone and would stop small students early."""
    num_samples: int = Field(default=12, gt=0)
    """Trials in all, the spec's own values first."""
    max_concurrent: int = Field(default=2, gt=0)
    """Trials at once; each takes workers_per_trial x distill.cpus_per_worker CPUs."""
    workers_per_trial: int = Field(default=1, gt=0)
    """Ray Train workers of each trial's distill run (sets distill.num_workers)."""
    epochs: int | None = Field(default=None, gt=0)
    """Epochs of each trial (sets distill.epochs), to fit a search in a time budget; default:
    distill.epochs. best.yaml keeps the trial's value, so it reproduces the trial."""
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    search_alg: Literal["random", "optuna"] = "random"
    """random: independent samples; optuna: Optuna's TPE sampler through Ray Tune's OptunaSearch
    (multi-objective when pareto is set)."""
    seed: int = 0
    """Sampler seed: the same spec samples the same trials."""

    @field_validator("space", mode="before")
    @classmethod
    def _flatten(cls, space: Any) -> Any:
        """Nested sections (`distill: {temperature: {...}}`, which `--set
        tune.space.distill.temperature.lower=2` can reach) and dotted paths both name fields;
        a mapping with a `type` is a search, any other mapping a section."""
        if not isinstance(space, dict):
            return space
        flat: dict[str, Any] = {}

        def walk(node: dict, prefix: str) -> None:
            for key, value in node.items():
                path = f"{prefix}{key}"
                if isinstance(value, dict) and "type" not in value:
                    walk(value, f"{path}.")
                elif path in flat:
                    raise ValueError(f"{path} is given twice")
                else:
                    flat[path] = value

        walk(space, "")
        return flat

    @model_validator(mode="after")
    def _pareto_fifo(self) -> TuneSpec:
        if self.pareto and self.scheduler.type != "fifo":
            raise ValueError("pareto needs scheduler {type: fifo}: ASHA stops trials by the "
                             "metric alone")
        return self


# ---------------------------------------------------------------- serving

class RolloutGates(Strict):
    """Health checks of the student, evaluated every `interval_s`; an unset gate is skipped."""

    min_agreement: float | None = Field(default=0.9, ge=0, le=1)
    """Top-1 agreement of the student with the teacher on shadowed (mirrored) requests."""
    min_agreement_samples: int = Field(default=20, gt=0)
    """Shadowed pairs needed before agreement counts; fewer and the gate waits."""
    max_p99_ms: float | None = Field(default=None, gt=0)
    """p99 latency of the student's answers in this step, at most."""
    max_error_rate: float | None = Field(default=0.01, ge=0, le=1)
    """Share of the student's calls in this step that raised, at most."""


class RolloutSpec(Strict):
    mode: Literal["canary", "shadow", "ab"] = "canary"
    """canary: `steps` of traffic to the student, moved by the gates; shadow: the teacher
    answers everything and `shadow_fraction` is mirrored to the student (measurement only);
    ab: a fixed `ab_split` with per-arm success rates from POST /v1/feedback."""
    steps: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0], min_length=1)
    """Percent of traffic to the student at each step, rising, ending at 100."""
    min_requests: int = Field(default=500, ge=0)
    """Routed requests a step must see before it can be promoted."""
    min_seconds: float = Field(default=300.0, ge=0)
    """Seconds a step must last before it can be promoted."""
    interval_s: float = Field(default=10.0, gt=0)
    """Seconds between gate evaluations."""
    shadow_fraction: float = Field(default=0.1, ge=0, le=1)
    """Share of requests also sent, asynchronously, to the model that did not answer."""
    sticky_header: str = Field(default="x-user-id", min_length=1)
    """Request header whose value (or the body's `user_id`) keeps a user on one model."""
    ab_split: float = Field(default=50.0, gt=0, lt=100)
    """ab mode: percent of traffic to the student."""
    failure_threshold: int = Field(default=3, gt=0)
    """Consecutive failed gate checks before `on_failure`."""
    on_failure: Literal["rollback", "pause"] = "rollback"
    """rollback: all traffic back to the teacher; pause: hold the current weight."""
    gates: RolloutGates = Field(default_factory=RolloutGates)

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError("must be strictly increasing")
        if steps[-1] != 100:
            raise ValueError("must end at 100 (all traffic to the student)")
        return steps


class AutoscalingSpec(Strict):
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=8, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} must be >= min_replicas "
                             f"{self.min_replicas}")
        return self


class ModelServingSpec(Strict):
    replicas: int = Field(default=1, gt=0)
    """Fixed replica count; ignored when `autoscaling` is set."""
    autoscaling: AutoscalingSpec | None = None
    cpus_per_replica: float = Field(default=0.25, gt=0)
    """Fractional, so teacher, student and router fit a small machine."""
    max_batch_size: int = Field(default=32, gt=0)
    """Requests merged into one forward pass by Serve's dynamic batching."""
    batch_wait_timeout_s: float = Field(default=0.005, ge=0)
    """How long a batch waits to fill before it runs anyway."""


class ServeSpec(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    student: str = Field(default="student", min_length=1)
    """`student`: the newest exported student of this pipeline; otherwise a run id under
    students/."""
    teacher_deployment: ModelServingSpec = Field(default_factory=ModelServingSpec)
    student_deployment: ModelServingSpec = Field(default_factory=ModelServingSpec)
    router_cpus: float = Field(default=0.25, gt=0)
    """CPUs of the single router replica (it holds the rollout state)."""
    max_instances: int = Field(default=1024, gt=0)
    """Rows per request, at most; more is a 413."""
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    """Request body size, at most; more is a 413."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)


class PipelineSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    store: str = "./runs"
    """Root of every artifact: a local directory or s3://bucket/prefix."""
    data: DataSpec
    teacher: TeacherSpec
    student: StudentSpec
    distill: DistillSpec = Field(default_factory=DistillSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    tune: TuneSpec | None = None
    """The search of `distillery tune`; `--space tune/<file>.yaml` supplies or replaces it."""
    serve: ServeSpec | None = None
    """`distillery serve`: HTTP serving of teacher and student with a gradual rollout."""

    @field_validator("evaluate")
    @classmethod
    def _shifts_fit_data(cls, evaluate: EvaluateSpec, info: ValidationInfo) -> EvaluateSpec:
        data = info.data.get("data")
        for i, shift in enumerate(evaluate.shifts):
            if shift.kind in GENERATOR_SHIFTS and not isinstance(data, Mnist1dData | None):
                raise ValueError(f"shifts.{i}.kind: {shift.kind!r} regenerates mnist1d data; "
                                 f"{data.source} data takes gaussian_noise, feature_dropout "
                                 "or scaling")
        return evaluate

    @field_validator("distill")
    @classmethod
    def _teacher_names_distinct(cls, distill: DistillSpec, info: ValidationInfo) -> DistillSpec:
        # each teacher's store entry is teachers/<name>/: a shared name would overwrite one
        if distill.multi_teacher is None or info.data.get("teacher") is None:
            return distill
        seen = {info.data["teacher"].name}
        for i, teacher in enumerate(distill.multi_teacher.teachers):
            if teacher.name in seen:
                raise ValueError(f"multi_teacher.teachers.{i}.name: {teacher.name!r} is already "
                                 "the name of another teacher; each needs its own")
            seen.add(teacher.name)
        return distill

    def spec_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading

def load_spec(path: str | Path, overrides: list[str] = ()) -> PipelineSpec:
    """Read, override and validate a pipeline spec; raise SpecError with a one-line reason."""
    raw = read_mapping(path, "--config", "sections")
    for item in overrides:
        apply_override(raw, item)
    spec = validate_spec(raw)
    check_inputs(spec)
    return spec


def read_mapping(path: str | Path, option: str, what: str) -> dict:
    """A YAML file holding a mapping (of `what`), or a SpecError naming `option` or the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{option}: file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: must be a mapping of {what}, got {type(raw).__name__}")
    return raw


def section_override(section: str, path: str | Path, option: str) -> str:
    """A spec section kept in a file of its own (`--space`, `--serving`) as a `--set
    section=...` override, so later --set items still apply."""
    return f"{section}={json.dumps(read_mapping(path, option, f'{section} settings'))}"


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
    models = [("teacher", spec.teacher.model), ("student", spec.student.model)]
    if spec.distill.multi_teacher:
        models += [(f"distill.multi_teacher.teachers.{i}", t.model)
                   for i, t in enumerate(spec.distill.multi_teacher.teachers)]
    for role, model in models:
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
    # a whole section as "got" would bury the reason; its path already says where to look
    if error["type"] not in ("missing", "extra_forbidden") and not isinstance(error["input"],
                                                                               dict):
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
