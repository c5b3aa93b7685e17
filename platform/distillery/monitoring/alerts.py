"""Alerts: rules evaluated on a drift summary and control charts, sent to the log and a webhook.

`evaluate_rules` is pure; the sinks (`log_alert`, `post_webhook`) do the I/O, and `dispatch`
sends every alert to both.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from distillery.config import AlertRule, AlertsSpec, WebhookSpec
from distillery.monitoring.control_charts import Chart

log = logging.getLogger(__name__)

BACKOFF_S = 0.5
"""Wait before the first retry; each later retry waits twice as long (WebhookSpec.retries)."""

NAMED_COLUMNS = 5  # drifted columns named in an alert's line; the rest are counted


@dataclass(frozen=True)
class Alert:
    rule: str  # the rule's name
    kind: str  # the rule's kind
    what: str  # one line for a person: what was measured, against what, where
    value: float  # the measured value
    threshold: float  # what it was compared with
    window: str  # the checked time range (ISO start/end) or a label
    signal: str | None  # the charted signal; None for drift rules

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# ---------------------------------------------------------------- rules

def evaluate_rules(rules: list[AlertRule], drift: dict | None, charts: dict[str, Chart],
                   window: str) -> list[Alert]:
    """The alerts that `rules` raise, in rule order.

    - drift_share: drift["share_of_drifted_columns"] >= threshold. No drift summary (too few
      rows to compare): cannot fire.
    - control_violation: a point after the reference of `charts[signal]` lies outside its
      Shewhart limits or its EWMA outside the EWMA limits. Reports the first such point.
    - consecutive_beyond: `count` consecutive points after the reference lie more than
      `threshold` sigmas from the reference mean, all on the same side (|x - mean| / sigma >
      threshold, strictly). Reports the first such run, whole.
    A signal without a chart (too few buckets yet): its rules cannot fire.

    Alert.value / Alert.threshold: the drifted share / the rule's share; the violating point (or
    its EWMA) / the limit it crossed; the run's smallest distance from the mean in sigmas / the
    rule's sigmas.
    """
    alerts = []
    for rule in rules:
        if rule.kind == "drift_share":
            alert = None if drift is None else _drift_share(rule, drift, window)
        elif rule.signal in charts:
            alert = CHART_CHECKS[rule.kind](rule, charts[rule.signal], window)
        else:
            alert = None
        if alert is not None:
            alerts.append(alert)
    return alerts


def _drift_share(rule: AlertRule, drift: dict, window: str) -> Alert | None:
    share = drift["share_of_drifted_columns"]
    if share < rule.threshold:
        return None
    # drifted_columns: the most drifted first, at most 10 (drift.drift_report's summary)
    names = [c["column"] for c in drift["drifted_columns"]]
    count = drift["number_of_drifted_columns"]
    listed = ", ".join(names[:NAMED_COLUMNS])
    more = f" and {count - NAMED_COLUMNS} more" if count > NAMED_COLUMNS else ""
    return Alert(rule.name, rule.kind, f"{count} of {drift['number_of_columns']} columns "
                 f"drifted (share {share:.2f} >= {rule.threshold:.2f}): {listed}{more}",
                 float(share), rule.threshold, window, None)


def _control_violation(rule: AlertRule, chart: Chart, window: str) -> Alert | None:
    i = chart.first_violation_after(chart.reference)
    if i is None:
        return None
    lim = chart.limits
    if chart.shewhart_violations[i]:
        what, value, lower, upper = chart.statistic, chart.values[i], lim.lower, lim.upper
    else:
        what, value, lower, upper = "EWMA", chart.ewma[i], chart.ewma_lower[i], chart.ewma_upper[i]
    side, threshold = ("above", upper) if value > upper else ("below", lower)
    count = int(chart.out_of_control[chart.reference:].sum())
    return Alert(rule.name, rule.kind,
                 f"{rule.signal}: {count} of {len(chart.values) - chart.reference} points after "
                 f"the reference out of control; first {what} {value:.4g} at "
                 f"{_iso(chart.start[i])}, {side} the limit {threshold:.4g} "
                 f"(reference mean {lim.mean:.4g}, sigma {lim.sigma:.4g})",
                 float(value), float(threshold), window, rule.signal)


def _consecutive(rule: AlertRule, chart: Chart, window: str) -> Alert | None:
    r, lim = chart.reference, chart.limits
    sigmas = (chart.values[r:] - lim.mean) / lim.sigma
    side = np.where(sigmas > rule.threshold, 1, np.where(sigmas < -rule.threshold, -1, 0))
    # runs of equal sides: [begin, end) between the points where the side changes
    edges = np.flatnonzero(np.diff(side)) + 1
    for begin, end in zip(np.r_[0, edges], np.r_[edges, len(side)], strict=True):
        if side[begin] != 0 and end - begin >= rule.count:
            weakest = float(np.abs(sigmas[begin:end]).min())
            where = "above" if side[begin] > 0 else "below"
            return Alert(rule.name, rule.kind,
                         f"{rule.signal}: {end - begin} consecutive points {where} the reference "
                         f"mean {lim.mean:.4g} by more than {rule.threshold:g} sigma (each at "
                         f"least {weakest:.2f} sigma, sigma {lim.sigma:.4g}), "
                         f"{_iso(chart.start[r + begin])} to {_iso(chart.start[r + end - 1])}; "
                         f"the rule needs {rule.count}",
                         weakest, rule.threshold, window, rule.signal)
    return None


CHART_CHECKS = {"control_violation": _control_violation, "consecutive_beyond": _consecutive}


def _iso(t: np.datetime64) -> str:
    return f"{np.datetime_as_string(t, unit='s')}Z"


# ---------------------------------------------------------------- sinks

def log_alert(alert: Alert, logger: logging.Logger) -> None:
    """One WARNING line: the alert as JSON."""
    logger.warning("%s", alert.to_json())


class _Backoff(Retry):
    """urllib3's Retry with the first retry after BACKOFF_S: urllib3 retries the first time at
    once and backs off only from the second (BACKOFF_S, 2 BACKOFF_S, 4 BACKOFF_S, ...)."""

    def get_backoff_time(self) -> float:
        # called after a failed attempt, so history holds at least that one
        return min(self.backoff_max, BACKOFF_S * 2 ** (len(self.history) - 1))


@contextlib.contextmanager
def _quiet_retries():
    """urllib3 logs each retry with the request's path, the hook URL's token included."""
    pool = logging.getLogger("urllib3")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool.setLevel(level)


def post_webhook(alert: Alert, spec: WebhookSpec) -> bool:
    """POST the alert as JSON; True when a 2xx answer came back.

    Connection errors, timeouts (spec.timeout_s per connect and per read) and 5xx answers are
    retried spec.retries times, waiting 0.5 s, 1 s, 2 s, ... A server's Retry-After is not
    obeyed, so a check never waits longer than that schedule. A read timeout is retried too: a
    receiver may then see an alert twice, which beats not seeing it. Never raises: a failure is
    logged with the webhook's origin (scheme, host, port) only, as the path and query of hook
    URLs often hold a token.
    """
    try:
        target = spec.target()
    except ValueError as err:  # names the variable, never its value
        log.error("alert %s: no webhook to send it to: %s", alert.rule, err)
        return False
    retry = _Backoff(total=spec.retries, status_forcelist=range(500, 600),
                     allowed_methods=["POST"], raise_on_status=False,
                     respect_retry_after_header=False)
    with requests.Session() as session, _quiet_retries():
        session.mount(f"{target.scheme}://", HTTPAdapter(max_retries=retry))
        try:
            response = session.post(str(target), data=alert.to_json(), timeout=spec.timeout_s,
                                    headers={"Content-Type": "application/json"})
        except requests.RequestException as e:
            failure = type(e).__name__
        else:
            if response.ok:
                return True
            failure = f"HTTP {response.status_code}"
    origin = f"{target.scheme}://{target.host}:{target.port}"
    log.error("alert %s: webhook %s did not take it (%s; retries allowed: %d)", alert.rule,
              origin, failure, spec.retries)
    return False


def dispatch(alerts: list[Alert], spec: AlertsSpec, logger: logging.Logger,
             already_sent: frozenset[tuple[str, str | None]] = frozenset()) -> dict:
    """Log every alert and POST it to the webhook when one is configured, unless its
    (rule, signal) is in `already_sent`: a condition that persists from one check to the next
    pages once, when it starts, and again only after a check without it.

    Returns {"alerts": n, "webhook_delivered": k, "webhook_failed": m, "webhook_skipped": s,
    "sent": the (rule, signal) pairs the webhook has had, skipped or delivered now} (k = m = s = 0
    and no pairs without a webhook). A failed delivery is not in "sent", so the next check
    tries it again.
    """
    delivered = failed = skipped = 0
    sent = set()
    for alert in alerts:
        log_alert(alert, logger)
        if spec.webhook is None:
            continue
        pair = (alert.rule, alert.signal)
        if pair in already_sent:
            skipped += 1
        elif post_webhook(alert, spec.webhook):
            delivered += 1
        else:
            failed += 1
            continue
        sent.add(pair)
    return {"alerts": len(alerts), "webhook_delivered": delivered, "webhook_failed": failed,
            "webhook_skipped": skipped, "sent": frozenset(sent)}
