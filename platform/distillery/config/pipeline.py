"""The whole pipeline spec, and loading it from YAML with overrides."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from distillery.config.base import NAME_PATTERN, SpecError, Strict
from distillery.config.data import DataSpec, Mnist1dData, TableData
from distillery.config.evaluation import (
    GENERATOR_SHIFTS,
    EvaluateSpec,
)
from distillery.config.lm import LM_SOURCES, LMPipelineSpec, check_lm_inputs
from distillery.config.models import (
    CNN1DSpec,
    HFSpec,
    ImportSpec,
    MLPSpec,
    TorchScriptSpec,
)
from distillery.config.monitoring import MonitorSpec
from distillery.config.serving import (
    ServeSpec,
)
from distillery.config.training import (
    DistillSpec,
    StudentSpec,
    TeacherSpec,
)
from distillery.config.tuning import TuneSpec
from distillery.storage import is_remote, path_exists


class PipelineSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
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
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    """Request log, drift reports, control charts and alerts of the served models."""

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

    @property
    def reads_text(self) -> bool:
        """Whether the rows are texts (data.text), read by the models as token ids."""
        return isinstance(self.data, TableData) and self.data.text is not None

    @model_validator(mode="after")
    def _teacher_init_fits(self) -> PipelineSpec:
        if self.student.init_from_teacher is None:
            return self
        if not (isinstance(self.student.model, HFSpec) and isinstance(self.teacher.model,
                                                                      HFSpec)):
            raise ValueError("student.init_from_teacher: the teacher's layers start a student "
                             "when both models are arch: hf")
        if self.distill.strategy not in ("response", "feature", "multi_teacher"):
            raise ValueError(f"student.init_from_teacher: distill.strategy "
                             f"{self.distill.strategy} trains other models than the student "
                             "from the teacher; use response, feature or multi_teacher")
        return self

    @model_validator(mode="after")
    def _models_fit_inputs(self) -> PipelineSpec:
        """Text rows are token ids: Hugging Face classifiers (or your own models) take them,
        the numeric architectures do not; and numeric rows are not token ids."""
        text = self.reads_text
        for role, model in self._models():
            if text and isinstance(model, MLPSpec | CNN1DSpec):
                raise ValueError(f"{role}.model.arch: {model.arch} takes numeric features; "
                                 "text data (data.text) takes arch: hf")
            if not text and isinstance(model, HFSpec):
                raise ValueError(f"{role}.model.arch: hf takes text (data.text names a text "
                                 "column), not numeric features")
        if text and self.evaluate.shifts:
            raise ValueError(f"evaluate.shifts.0.kind: {self.evaluate.shifts[0].kind} perturbs "
                             "numeric features; text data takes no shifts (evaluate.shifts: [])")
        if text and self.data.tokenizer is None:
            model = self.teacher.model
            if not isinstance(model, HFSpec) or model.path is None:
                raise ValueError("data.tokenizer: required unless the teacher is a saved "
                                 "Hugging Face model (teacher.model.path), whose tokenizer "
                                 "it then is")
            self.data.tokenizer = model.path
        return self

    def _models(self) -> list[tuple[str, object]]:
        """(spec field of the model, its spec) of every model the pipeline builds."""
        models = [("teacher", self.teacher.model), ("student", self.student.model)]
        if self.distill.multi_teacher:
            models += [(f"distill.multi_teacher.teachers.{i}", t.model)
                       for i, t in enumerate(self.distill.multi_teacher.teachers)]
        return models

    def spec_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading

def load_spec(path: str | Path, overrides: list[str] = ()) -> PipelineSpec | LMPipelineSpec:
    """Read, override and validate a pipeline spec and check its inputs (local files exist,
    factories import, the tokenizer fills what it defines); raise SpecError with a one-line
    reason. A `data.source` of LM_SOURCES makes it a language-model spec."""
    spec = parse_spec(path, overrides)
    if isinstance(spec, LMPipelineSpec):
        check_lm_inputs(spec)
    else:
        check_inputs(spec)
    return spec


def parse_spec(path: str | Path, overrides: list[str] = ()) -> PipelineSpec | LMPipelineSpec:
    """The spec's settings alone: read, overridden and validated, its inputs not checked (for
    a bench or test that reads a spec whose files a demo writes)."""
    raw = read_mapping(path, "--config", "sections")
    for item in overrides:
        apply_override(raw, item)
    return validate_spec(raw)


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


def validate_spec(raw: dict) -> PipelineSpec | LMPipelineSpec:
    data = raw.get("data")
    kind = (LMPipelineSpec if isinstance(data, dict) and data.get("source") in LM_SOURCES
            else PipelineSpec)
    try:
        return kind.model_validate(raw)
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
    for role, model in spec._models():
        if isinstance(model, HFSpec) and model.path is not None:
            check_hf_dir(model.path, f"{role}.model.path", "config.json", "model")
        if isinstance(model, TorchScriptSpec):
            candidates.append((f"{role}.model.path", model.path))
        if isinstance(model, ImportSpec):
            _check_factory(f"{role}.model.factory", model.factory)
            if model.weights:
                candidates.append((f"{role}.model.weights", model.weights))
    for field, location in candidates:
        if not is_remote(location) and not path_exists(location):
            raise SpecError(f"{field}: file not found: {location}")
    if spec.reads_text:
        fill_from_tokenizer(spec)


def check_hf_dir(path: str, field: str, marker: str, what: str) -> None:
    """A local directory holding `marker`: transformers would take any other path for a hub
    repo id, and nothing is downloaded here."""
    if not Path(path).is_dir() or not (Path(path) / marker).is_file():
        raise SpecError(f"{field}: no {marker} in a directory {path} (give the local directory "
                        f"a Hugging Face {what} was saved to; nothing is downloaded)")


def fill_from_tokenizer(spec: PipelineSpec) -> None:
    """Text models built from a config mapping get the tokenizer's vocabulary size and padding
    id unless the mapping sets them, and must have room for data.max_length positions."""
    from transformers import AutoConfig, AutoTokenizer

    check_hf_dir(spec.data.tokenizer, "data.tokenizer", "tokenizer.json", "fast tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(spec.data.tokenizer, local_files_only=True)
    if tokenizer.pad_token_id is None:
        raise SpecError(f"data.tokenizer: the tokenizer in {spec.data.tokenizer} has no padding "
                        "token; rows of text are padded to data.max_length")
    for role, model in spec._models():
        if not isinstance(model, HFSpec):
            continue
        if model.config is not None:
            model.config.setdefault("vocab_size", len(tokenizer))
            model.config.setdefault("pad_token_id", tokenizer.pad_token_id)
            config = AutoConfig.for_model(**model.config)
        else:
            config = AutoConfig.from_pretrained(model.path, local_files_only=True)
        if config.vocab_size < len(tokenizer):
            raise SpecError(f"{role}.model: vocab_size {config.vocab_size} is smaller than the "
                            f"tokenizer's {len(tokenizer)} tokens (data.tokenizer)")
        positions = getattr(config, "max_position_embeddings", None)
        if positions is not None and positions < spec.data.max_length:
            raise SpecError(f"data.max_length: {spec.data.max_length} is more than {role}'s "
                            f"max_position_embeddings {positions}")


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
    if not path and re.match(r"^[\w.]+: ", reason):  # a whole-spec check names its own field
        return reason
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
