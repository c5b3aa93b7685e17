"""The monitoring spec: request log, drift reports, control charts and alerts."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import (
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from distillery.config.base import Strict

SIGNALS = ("confidence", "agreement", "p99_latency_ms", "class_share")


class RequestLogSpec(Strict):
    enabled: bool = True
    flush_rows: int = Field(default=1000, gt=0)
    """Buffered rows that trigger a write of one Parquet file."""
    flush_seconds: float = Field(default=5.0, gt=0)
    """Seconds after the oldest buffered row at which the buffer is written anyway."""
    max_buffer_rows: int = Field(default=100_000, gt=0)
    """Rows held while the store is slow or down; beyond this new rows are dropped and counted
    (distillery_request_log_rows{outcome="dropped"}), never failing a request."""


class StatTest(Strict):
    method: str | None = None
    """An Evidently stattest name (e.g. `wasserstein`, `ks`, `psi`, `jensenshannon`, `chisquare`);
    None: Evidently's default for the column type and size."""
    threshold: float | None = Field(default=None, gt=0)
    """The method's drift threshold; None: the method's default."""


class DriftSpec(Strict):
    reference_rows: int = Field(default=2000, gt=0)
    """Held-out rows (the validation split, then the test split) with the served student's
    outputs on them (and its agreement with the teacher), used as the reference; all of them
    when there are fewer."""
    min_rows: int = Field(default=500, gt=0)
    """A live window with fewer rows is not compared (too few to tell drift from noise)."""
    numerical: StatTest = Field(default_factory=StatTest)
    """Test for numeric columns: the inputs, confidence, entropy."""
    categorical: StatTest = Field(default_factory=StatTest)
    """Test for categorical columns: the predicted class, agreement with the teacher."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """Share of drifted columns at which the whole dataset counts as drifted."""


class ControlSpec(Strict):
    bucket_seconds: float = Field(default=60.0, gt=0)
    """Width of one point on a control chart."""
    reference_buckets: int = Field(default=20, ge=2)
    """The first buckets of the charted range estimate the control limits."""
    min_bucket_rows: int = Field(default=20, gt=0)
    """Buckets with fewer logged rows are left off the chart (too noisy to judge)."""
    k_sigma: float = Field(default=4.0, gt=0)
    """Shewhart limits: reference mean +/- k_sigma x reference standard deviation. 4, not the
    textbook 3: limits estimated from ~20 buckets of skewed means and tested on ~40 points per
    check false-alarm on many clean windows at 3 (false-alarm and detection rates per setting:
    BENCHMARKS.md, Monitoring, from bench/monitor.py)."""
    ewma_lambda: float = Field(default=0.2, gt=0, le=1)
    """EWMA weight of the newest point; small values catch small persistent shifts."""
    ewma_k: float = Field(default=4.0, gt=0)
    """EWMA limits in units of the EWMA statistic's asymptotic standard deviation."""
    signals: list[Literal[SIGNALS]] = Field(default_factory=lambda: list(SIGNALS), min_length=1)


class AlertRule(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["drift_share", "control_violation", "consecutive_beyond"]
    """drift_share: share of drifted columns >= threshold; control_violation: a point of
    `signal` outside its Shewhart or EWMA limits; consecutive_beyond: `count` consecutive points
    of `signal` on one side of the reference mean beyond `threshold` sigmas."""
    signal: Literal[SIGNALS] | None = None
    threshold: float | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> AlertRule:
        if self.kind == "drift_share":
            if self.threshold is None or self.threshold > 1:
                raise ValueError("threshold: drift_share rules need a share in 0-1")
            if self.signal is not None:
                raise ValueError("signal: drift_share rules take no signal")
        elif self.signal is None:
            raise ValueError(f"signal: {self.kind} rules need one of {list(SIGNALS)}")
        if self.kind == "consecutive_beyond" and self.threshold is None:
            raise ValueError("threshold: consecutive_beyond rules need a number of sigmas")
        if self.kind == "consecutive_beyond" and self.count is None:
            raise ValueError("count: consecutive_beyond rules need a number of points")
        # a field the kind ignores would look like it does something
        if self.kind == "control_violation" and self.threshold is not None:
            raise ValueError("threshold: control_violation rules use the chart's own limits "
                             "(monitor.control.k_sigma, ewma_k); remove it")
        if self.kind != "consecutive_beyond" and self.count is not None:
            raise ValueError(f"count: only consecutive_beyond rules take a count, not {self.kind}")
        return self


class WebhookSpec(Strict):
    url_env: str = "DISTILLERY_ALERT_WEBHOOK_URL"
    """Name of the environment variable that holds the http(s) URL alerts are POSTed to. Hook
    URLs often carry a token, and secrets come only from the environment: the spec names the
    variable, and the URL is read when an alert is sent (for the Serve app's scheduled check,
    in the router's process, so set it where Ray starts)."""
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0)
    """Attempts after the first, with exponential backoff from 0.5 s."""

    @model_validator(mode="before")
    @classmethod
    def _no_url_here(cls, data: object) -> object:
        # Checked on the raw section, so that the error never echoes a value: a URL pasted
        # where the variable's name goes would otherwise land in logs as ", got <url>".
        if isinstance(data, dict):
            if "url" in data:
                raise ValueError("url: the URL comes only from the environment; set url_env to "
                                 "the name of the variable that holds it")
            name = data.get("url_env")
            if name is not None and not (isinstance(name, str)
                                         and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
                raise ValueError("url_env: must be the name of an environment variable "
                                 "(letters, digits, _), such as DISTILLERY_ALERT_WEBHOOK_URL")
        return data

    def target(self) -> HttpUrl:
        """The URL from the environment (it holds the secret: never log it). ValueError naming
        the variable, never its value, when it is unset or not an http(s) URL."""
        url = os.environ.get(self.url_env)
        if not url:
            raise ValueError(f"{self.url_env} is not set")
        try:
            return _HTTP_URL.validate_python(url)
        except ValidationError:
            raise ValueError(f"{self.url_env} is not an http:// or https:// URL") from None


_HTTP_URL = TypeAdapter(HttpUrl)


class AlertsSpec(Strict):
    rules: list[AlertRule] = Field(default_factory=lambda: [
        AlertRule(name="dataset-drift", kind="drift_share", threshold=0.5),
        AlertRule(name="confidence-out-of-control", kind="control_violation",
                  signal="confidence")])
    webhook: WebhookSpec | None = None
    """Each alert is POSTed here as JSON; alerts always go to the log."""
    gate_rollout: bool = True
    """An active alert fails the rollout's `alerts` gate (rollback or pause, per on_failure)."""


class MonitorSpec(Strict):
    request_log: RequestLogSpec = Field(default_factory=RequestLogSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    control: ControlSpec = Field(default_factory=ControlSpec)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    check_interval_s: float | None = Field(default=300.0, gt=0)
    """The Serve app checks the latest `window_s` this often; None: only `distillery drift`."""
    window_s: float = Field(default=3600.0, gt=0)
    """Length of the live window the scheduled check compares with the reference."""
    keep_reports: int | None = Field(default=288, gt=0)
    """Report folders kept under monitor/reports/: the latest windows by start time (288 is a
    day of 5-minute checks; each holds an HTML report of megabytes, sizes in BENCHMARKS.md,
    Monitoring); None keeps every one."""
