"""Language-model specs (`data.source: text | python_stdlib`): a Hugging Face causal LM
distilled token by token into a smaller one through the top-k cache (distillery.lm)."""

from __future__ import annotations

import glob
import hashlib
import sysconfig
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distillery.config.base import NAME_PATTERN, SpecError, Strict
from distillery.config.models import check_hf_config
from distillery.config.training import InferenceSpec, TrainSpec

LM_SOURCES = ("text", "python_stdlib")
"""`data.source` values that make a spec a language-model spec."""


class TokenizerTrainSpec(Strict):
    vocab_size: int = Field(default=2048, ge=257, le=1_000_000)
    """Byte-level BPE: the 256 bytes, <|endoftext|>, then merges learned on the train split."""


class TextDataSpec(Strict):
    source: Literal["text", "python_stdlib"]
    """text: files under `paths`; python_stdlib: the running interpreter's standard-library
    `.py` files (a real corpus every machine has offline)."""
    paths: list[str] = Field(default_factory=list)
    """text: files, directories or glob patterns (local)."""
    format: Literal["text", "jsonl", "parquet"] = "text"
    """text: one document per file; jsonl / parquet: one per record, from `field`."""
    field: str | None = None
    max_documents: int | None = Field(default=None, gt=0)
    """Use the first N documents in sorted path order (a budget for small machines)."""
    block_size: int = Field(default=128, ge=8)
    """Tokens per training sequence; documents are packed with EOS between them."""
    val_fraction: float = Field(default=0.05, gt=0, lt=1)
    """Share of documents held out, chosen by a hash of the text (lm.text_data)."""
    tokenizer: str | TokenizerTrainSpec | None = None
    """A directory holding a saved Hugging Face tokenizer, `{vocab_size: N}` to train a
    byte-level BPE here on the train split, or omitted for the teacher's own (teacher.hf DIR)."""

    @model_validator(mode="after")
    def _paths(self) -> TextDataSpec:
        if self.source == "text" and not self.paths:
            raise ValueError("paths: required for source text (files, directories or globs)")
        if self.source == "python_stdlib" and self.paths:
            raise ValueError("paths: source python_stdlib reads the standard library; "
                             "use source text for your own files")
        if self.format in ("jsonl", "parquet") and not self.field:
            raise ValueError(f"field: required for format {self.format} (the text column)")
        if self.format == "text" and self.field:
            raise ValueError("field: only for format jsonl or parquet")
        return self


def _check_hf(value: str | dict) -> str | dict:
    """A directory, or a config mapping from which transformers builds a causal LM."""
    if isinstance(value, str):
        if not value:
            raise ValueError("give a directory holding a saved model, or a config mapping")
        return value
    return check_hf_config(value, "causal_lm")


class LMTeacherSpec(Strict):
    name: str = Field(default="lm-teacher", pattern=NAME_PATTERN)
    hf: str | dict[str, Any]
    """A local directory a causal LM was saved to (pretrained), or a config mapping
    (`{model_type: gpt2, n_layer: 4, ...}`) to train here on next-token loss with `train`.
    vocab_size and n_positions come from the tokenizer and data.block_size."""
    train: TrainSpec | None = None
    inference: InferenceSpec = Field(
        default_factory=lambda: InferenceSpec(batch_size=64, concurrency=(1, 2)))
    """Teacher inference over the packed train blocks (batch_size in blocks)."""

    _hf = field_validator("hf")(_check_hf)

    @property
    def pretrained(self) -> bool:
        return isinstance(self.hf, str)

    @model_validator(mode="after")
    def _trainable(self) -> LMTeacherSpec:
        if self.pretrained and self.train is not None:
            raise ValueError("train must be omitted for a pretrained teacher (hf: DIR)")
        if not self.pretrained and self.train is None:
            raise ValueError("train is required when hf is a config (the teacher is trained "
                             "here)")
        return self


class LMStudentSpec(Strict):
    hf: str | dict[str, Any]
    """A local directory (its weights are the starting point) or a config mapping (fresh
    weights); either way it must share the teacher's tokenizer."""

    _hf = field_validator("hf")(_check_hf)


class LMDistillSpec(TrainSpec):
    topk: int = Field(default=32, ge=1)
    """Teacher log-probs kept per token in the cache; the rest is one tail bucket."""
    temperature: float = Field(default=1.0, gt=0)
    """The cache holds softmax(z / T): a new T needs a new cache (the key includes it)."""
    alpha: float = Field(default=0.5, ge=0, le=1)
    """Weight of the token KD term; 1 - alpha weighs next-token cross-entropy."""
    kl: Literal["forward", "reverse", "jsd"] = "forward"


class LMEvaluateSpec(Strict):
    prompts: list[str] = Field(default_factory=lambda: ["def ", "import ", "class "],
                               min_length=1)
    """Greedy continuations shown side by side in the report, and timed for tokens/s."""
    max_new_tokens: int = Field(default=32, gt=0)
    batch_size: int = Field(default=16, gt=0)
    max_val_blocks: int = Field(default=256, gt=0)
    """Validation blocks scored for perplexity and agreement."""
    seconds: float = Field(default=2.0, gt=0)
    """Time budget of each throughput measurement, per model."""


class LMServeSpec(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    student: str = "student"
    """`student` = this pipeline's newest distilled student, or a run id under students/."""
    max_new_tokens: int = Field(default=64, gt=0)
    """The most tokens one request may ask for."""
    max_prompt_tokens: int | None = Field(default=None, gt=0)
    """Default: the model's context length minus max_new_tokens."""
    num_replicas: int = Field(default=1, gt=0)


class LMPipelineSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    store: str = "./runs"
    data: TextDataSpec
    teacher: LMTeacherSpec
    student: LMStudentSpec
    distill: LMDistillSpec = Field(default_factory=LMDistillSpec)
    evaluate: LMEvaluateSpec = Field(default_factory=LMEvaluateSpec)
    serve: LMServeSpec | None = None

    @model_validator(mode="after")
    def _tokenizer_known(self) -> LMPipelineSpec:
        if self.data.tokenizer is None and not self.teacher.pretrained:
            raise ValueError("data.tokenizer: required when the teacher is trained here "
                             "(give a directory or {vocab_size: N})")
        if self.evaluate.max_new_tokens >= self.data.block_size:
            raise ValueError(f"evaluate.max_new_tokens: {self.evaluate.max_new_tokens} leaves "
                             f"no room for a prompt in data.block_size {self.data.block_size}")
        return self

    def spec_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def text_files(data: TextDataSpec) -> list[str]:
    """The corpus files in sorted order: python_stdlib's top-level modules (site-packages and
    the test suite live in subdirectories), or every file `paths` names, expands or holds."""
    if data.source == "python_stdlib":
        return sorted(str(p) for p in Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    files: list[str] = []
    for i, pattern in enumerate(data.paths):
        matched = sorted(glob.glob(pattern, recursive=True))
        if not matched:
            raise SpecError(f"data.paths.{i}: nothing matches {pattern!r}")
        for path in map(Path, matched):
            files += sorted(str(f) for f in path.rglob("*") if f.is_file()) if path.is_dir() \
                else [str(path)]
    return files


def check_lm_inputs(spec: LMPipelineSpec) -> None:
    """Local inputs exist: the corpus, model directories and a tokenizer directory."""
    text_files(spec.data)
    dirs = [("teacher.hf", spec.teacher.hf), ("student.hf", spec.student.hf),
            ("data.tokenizer", spec.data.tokenizer)]
    for field, value in dirs:
        if isinstance(value, str) and not Path(value).is_dir():
            raise SpecError(f"{field}: no directory {value} (give the local directory a "
                            "Hugging Face model or tokenizer was saved to; nothing is "
                            "downloaded)")
