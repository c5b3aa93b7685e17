"""The pipeline spec: typed, validated once at the edge.

`load_spec(path, overrides)` reads one YAML file, applies `--set a.b=value` overrides and
returns a `PipelineSpec`. Anything wrong fails here, before any Ray work, with a `SpecError`
whose one-line message names the field path (`distill.temperature: must be > 0, got -1`).
One module per section; everything is importable from `distillery.config`.
"""

from distillery.config.base import (
    NAME_PATTERN,
    SpecError,
    Strict,
)
from distillery.config.data import (
    DataSpec,
    Mnist1dData,
    Mnist1dTransfer,
    TableData,
    TableTransfer,
)
from distillery.config.evaluation import (
    GENERATOR_SHIFTS,
    EvaluateSpec,
    GatesSpec,
    LatencySpec,
    ShiftSpec,
)
from distillery.config.models import (
    CNN1DSpec,
    HFSpec,
    ImportSpec,
    MLPSpec,
    ModelSpec,
    TorchScriptSpec,
    parse_model_spec,
)
from distillery.config.monitoring import (
    SIGNALS,
    AlertRule,
    AlertsSpec,
    ControlSpec,
    DriftSpec,
    MonitorSpec,
    RequestLogSpec,
    StatTest,
    WebhookSpec,
)
from distillery.config.pipeline import (
    PipelineSpec,
    apply_override,
    check_inputs,
    load_spec,
    parse_spec,
    read_mapping,
    section_override,
    validate_spec,
)
from distillery.config.serving import (
    AutoscalingSpec,
    ModelServingSpec,
    RolloutGates,
    RolloutSpec,
    ServeSpec,
)
from distillery.config.training import (
    STRATEGY_SECTIONS,
    CurriculumSpec,
    DistillSpec,
    FeaturePair,
    FeatureSpec,
    InferenceSpec,
    MultiTeacherSpec,
    OnlineSpec,
    ProgressiveSpec,
    StudentSpec,
    TeacherInit,
    TeacherSpec,
    TrainSpec,
)
from distillery.config.tuning import (
    SchedulerSpec,
    SearchDim,
    TuneSpec,
)

__all__ = [
    "NAME_PATTERN",
    "SIGNALS",
    "AlertRule",
    "AlertsSpec",
    "ControlSpec",
    "DriftSpec",
    "MonitorSpec",
    "RequestLogSpec",
    "StatTest",
    "WebhookSpec",
    "SpecError",
    "Strict",
    "MLPSpec",
    "CNN1DSpec",
    "HFSpec",
    "ImportSpec",
    "TorchScriptSpec",
    "parse_model_spec",
    "ModelSpec",
    "Mnist1dTransfer",
    "Mnist1dData",
    "TableTransfer",
    "TableData",
    "DataSpec",
    "TrainSpec",
    "InferenceSpec",
    "TeacherSpec",
    "StudentSpec",
    "TeacherInit",
    "FeaturePair",
    "FeatureSpec",
    "CurriculumSpec",
    "ProgressiveSpec",
    "MultiTeacherSpec",
    "OnlineSpec",
    "DistillSpec",
    "STRATEGY_SECTIONS",
    "ShiftSpec",
    "LatencySpec",
    "GatesSpec",
    "EvaluateSpec",
    "GENERATOR_SHIFTS",
    "SearchDim",
    "SchedulerSpec",
    "TuneSpec",
    "RolloutGates",
    "RolloutSpec",
    "AutoscalingSpec",
    "ModelServingSpec",
    "ServeSpec",
    "PipelineSpec",
    "load_spec",
    "parse_spec",
    "read_mapping",
    "section_override",
    "validate_spec",
    "apply_override",
    "check_inputs",
]
