"""Training specs: teacher, student, and the distillation strategies' sections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from distillery.config.base import NAME_PATTERN, Strict
from distillery.config.models import (
    HFSpec,
    ImportSpec,
    ModelSpec,
    TorchScriptSpec,
)


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
    """DeepSpeed ZeRO: 0 keeps a full copy of everything on each worker; 1 partitions the
    optimizer state across the workers, 2 also the gradients, 3 also the parameters. At 1-3
    each worker checkpoints its own partition, so a run resumes only with the same num_workers
    (DeepSpeed refuses another)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU; bf16 also trains on CPU (DeepSpeed's CPU accelerator).
    Exported weights are float32 either way (bf16 values upcast)."""
    checkpoint_every: int = Field(default=1, gt=0)
    """Epochs between checkpoints (the last epoch is always checkpointed); a crash redoes at
    most this many epochs."""
    ingest: Literal["auto", "materialize", "stream"] = "auto"
    """How workers read their training rows. materialize: each worker pulls its shard into
    Ray's object store once, before the first epoch, and every epoch reads it from there (the
    faster choice for rows that fit: BENCHMARKS.md, Distillation epoch). stream: every epoch
    streams the shard through Ray Data's streaming split with a local shuffle buffer, so the
    rows never need to fit in memory at once. auto: materialize when the rows' estimated size
    is at most a quarter of the cluster's object store, else stream; the stage's first line
    says which."""
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
    gpus_per_actor: float = Field(default=0, ge=0)
    """> 0: each actor runs the teacher on a GPU (a fraction shares one between actors)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Extra Ray resources per actor, e.g. a custom resource that pins inference to nodes."""

    @model_validator(mode="after")
    def _ordered(self) -> InferenceSpec:
        lo, hi = self.concurrency
        if not 1 <= lo <= hi:
            raise ValueError(f"concurrency must be (min, max) with 1 <= min <= max, got {lo, hi}")
        return self


class TeacherSpec(Strict):
    name: str = Field(default="teacher", pattern=NAME_PATTERN)
    model: ModelSpec
    train: TrainSpec | None = None
    """How train-teacher trains it; omit for a pretrained teacher (TorchScript, import with
    weights, or a saved Hugging Face classifier). With `arch: hf, path: DIR`, it fine-tunes."""
    inference: InferenceSpec = Field(default_factory=InferenceSpec)

    @property
    def pretrained(self) -> bool:
        """Taken as trained: TorchScript, imported weights, or a saved Hugging Face classifier
        with no `train` (with one, train-teacher fine-tunes it)."""
        if isinstance(self.model, HFSpec):
            return self.model.path is not None and self.train is None
        return isinstance(self.model, TorchScriptSpec) or (
            isinstance(self.model, ImportSpec) and self.model.weights is not None)

    @model_validator(mode="after")
    def _trainable(self) -> TeacherSpec:
        if self.train is None and not self.pretrained:
            raise ValueError("train is required unless the model is pretrained "
                             "(arch: torchscript, arch: import with weights, or arch: hf with "
                             "path)")
        if self.train is not None and self.pretrained:
            raise ValueError("train must be omitted for a pretrained model: it would be ignored")
        return self


class TeacherInit(Strict):
    layers: list[Annotated[int, Field(ge=0)]] | None = None
    """The teacher's encoder layer each student layer starts from, in order; default every k-th
    from the first (k = teacher layers // student layers), as DistilBERT (Sanh et al. 2019)."""


class StudentSpec(Strict):
    model: ModelSpec
    init_from_teacher: TeacherInit | None = None
    """Start the distilled student from the teacher's weights: its embeddings, the chosen
    encoder layers, pooler and head. Hugging Face models of one width: the student differs from
    the teacher in num_hidden_layers only. Stated in the student's card; the baseline still
    starts from scratch (it is the student trained on labels alone)."""


class FeaturePair(Strict):
    student: str = Field(min_length=1)
    """Module name in the student (as `named_modules()` lists it), e.g. `features.3`."""
    teacher: str = Field(min_length=1)
    """Module name in the teacher whose output the student's should match."""
    loss: Literal["mse", "cosine"] = "mse"
    weight: float = Field(default=1.0, gt=0)
    attention: bool = False
    """Compare the two attention modules' attention probabilities, averaged over heads ((L, L)
    per row, no adapter), rather than their outputs (TinyBERT-style attention transfer). Both
    must be modules that return their attention weights (a Hugging Face model's self-attention,
    e.g. `model.bert.encoder.layer.0.attention.self`, which switches the model to eager
    attention); `cosine` suits them (probabilities are small, so their mse is too)."""


class FeatureSpec(Strict):
    pairs: list[FeaturePair] = Field(min_length=1)
    """Student layer -> teacher layer; a learned adapter per pair (1x1 conv for channel maps,
    linear for vectors and for a text model's (L, H) hidden states) projects the student's width
    onto the teacher's. Adapters are trained with the student and dropped at export."""
    cache: bool = True
    """True: teacher-infer writes the mapped teacher layers into the cache; False: every
    training worker runs the teacher forward live for them (no cache growth). A text model's
    maps are (L, H) per row (128 x 384 floats for MiniLM): live is the practical choice."""

    @model_validator(mode="after")
    def _attention_is_live(self) -> FeatureSpec:
        attention = [i for i, p in enumerate(self.pairs) if p.attention]
        if attention and self.cache:
            raise ValueError(f"pairs {attention} compare attention maps, which only a live "
                             "teacher gives; set distill.feature.cache: false")
        return self


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
