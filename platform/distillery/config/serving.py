"""The serving spec: deployments, limits and the rollout."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from distillery.config.base import NAME_PATTERN, Strict


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
    batch_wait_timeout_s: float = Field(default=0.0, ge=0)
    """How long a batch waits to fill before it runs anyway. 0: a batch is what queued while
    the last one ran, so a lone request never waits; more trades latency for larger batches."""


# settings of a model's own deployment, which only topology `separate` has
SEPARATE_ONLY = {"replicas", "autoscaling", "cpus_per_replica"}


class ServeSpec(Strict):
    topology: Literal["colocated", "separate"] = "colocated"
    """colocated: the router holds teacher and student in its own process, so a request
    crosses the HTTP proxy and one replica (small models on CPU); separate: each model is a
    deployment of its own (`*_deployment`: replicas, CPUs, autoscaling), called by the router
    over Ray, for models that need their own replicas or accelerators."""
    access_log: bool = False
    """Serve's access log: a line per request in every replica's log file."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    student: str = Field(default="student", pattern=NAME_PATTERN)
    """`student`: the newest exported student of this pipeline; otherwise a run id under
    students/."""
    teacher_deployment: ModelServingSpec = Field(default_factory=ModelServingSpec)
    student_deployment: ModelServingSpec = Field(default_factory=ModelServingSpec)
    router_cpus: float = Field(default=0.25, gt=0)
    """CPUs of each router replica (colocated: with both models)."""
    router_replicas: int = Field(default=1, gt=0)
    """Router replicas; the rollout's state and decision loop stay one per app (the
    coordinator), and each replica applies a new weight within `rollout.interval_s`."""
    max_instances: int = Field(default=1024, gt=0)
    """Rows per request, at most; more is a 413."""
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    """Request body size, at most; more is a 413."""
    fallback_to_teacher: bool = True
    """A routed request whose student call fails is answered by the teacher (the response's
    `model` says so; counted in distillery_student_fallbacks); false: the client gets a 503."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)

    @model_validator(mode="after")
    def _deployments_are_separate(self) -> ServeSpec:
        """A colocated model has no deployment of its own: its replica settings would be
        ignored, so setting them is a mistake to name, not to drop."""
        if self.topology == "colocated":
            for arm in ("teacher", "student"):
                own = getattr(self, f"{arm}_deployment").model_fields_set & SEPARATE_ONLY
                if own:
                    raise ValueError(f"{arm}_deployment.{sorted(own)[0]}: applies to "
                                     f"topology separate only (this spec's topology is "
                                     f"colocated: the router holds both models; size it with "
                                     f"router_cpus)")
        return self
