"""The Ray Tune search spec."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from distillery.config.base import Strict


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
