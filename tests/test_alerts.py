import dataclasses
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from distillery.config import (
    AlertRule,
    AlertsSpec,
    ControlSpec,
    SpecError,
    WebhookSpec,
    load_spec,
)
from distillery.monitoring.alerts import (
    Alert,
    dispatch,
    evaluate_rules,
    log_alert,
    post_webhook,
)
from distillery.monitoring.control_charts import Series, chart

from helpers import REFERENCE_SPEC, free_port

WINDOW = "2026-01-01T00:00:00Z/2026-01-01T01:00:00Z"
# reference -1, 0, 1: mean 0 and sigma 1 exactly, so points are in sigmas
SPEC = ControlSpec(reference_buckets=3, k_sigma=3.0, ewma_lambda=0.5, ewma_k=3.0)


def signal_chart(*after: float):
    values = np.array([-1.0, 0.0, 1.0, *after])
    start = np.datetime64("2026-01-01T00:00:00", "us") + np.arange(len(values)) * np.timedelta64(
        60, "s")
    return chart(Series(start, values, np.full(len(values), 100)), SPEC)


def drift(share: float) -> dict:
    """A drift summary as drift.drift_report writes it."""
    names = [f"x{i}" for i in range(round(share * 10))]
    return {"dataset_drift": share >= 0.5, "share_of_drifted_columns": share,
            "drifted_columns": [{"column": n, "method": "wasserstein", "score": 0.2,
                                 "threshold": 0.1} for n in names],
            "number_of_drifted_columns": len(names), "number_of_columns": 10}


DRIFT_RULE = AlertRule(name="drift", kind="drift_share", threshold=0.5)
VIOLATION_RULE = AlertRule(name="conf", kind="control_violation", signal="confidence")


def run_rule(rule, drift_summary=None, **charts):
    return evaluate_rules([rule], drift_summary, charts, WINDOW)


# ---------------------------------------------------------------- rules

def test_drift_share_fires_at_the_threshold_not_below():
    (alert,) = run_rule(DRIFT_RULE, drift(0.5))
    assert (alert.rule, alert.kind, alert.value, alert.threshold) == ("drift", "drift_share",
                                                                      0.5, 0.5)
    assert (alert.window, alert.signal) == (WINDOW, None)
    assert alert.what == ("5 of 10 columns drifted (share 0.50 >= 0.50): x0, x1, "
                          "x2, x3, x4")
    assert run_rule(DRIFT_RULE, drift(0.4)) == []
    assert run_rule(DRIFT_RULE, None) == []  # no drift report (too few rows): cannot fire


def test_drift_alert_names_five_columns_and_counts_the_rest():
    (alert,) = run_rule(DRIFT_RULE, drift(0.8))
    assert alert.what.endswith("x3, x4 and 3 more")


def test_control_violation_fires_beyond_the_limit_not_on_it():
    # a point exactly at mean + 3 sigma is in control; its EWMA 1.6875 < 1.7287 as well
    assert run_rule(VIOLATION_RULE, confidence=signal_chart(3.0)) == []
    (alert,) = run_rule(VIOLATION_RULE, confidence=signal_chart(3.5))
    assert (alert.value, alert.threshold, alert.signal) == (3.5, 3.0, "confidence")
    assert alert.what == ("confidence: 1 of 1 points after the reference out of control; first "
                          "value 3.5 at 2026-01-01T00:03:00Z, above the limit 3 "
                          "(reference mean 0, sigma 1)")


def test_control_violation_fires_on_an_ewma_only_shift():
    # 2-sigma points stay inside the Shewhart limits; the EWMA 1.796875 crosses 1.731839 at the
    # third of them (the 6th point: 3 sqrt(1/3 (1 - 0.25^6)))
    (alert,) = run_rule(VIOLATION_RULE, confidence=signal_chart(2, 2, 2, 2))
    assert alert.value == 1.796875
    assert alert.threshold == pytest.approx(3 * np.sqrt((1 - 0.25 ** 6) / 3), rel=1e-12)
    assert "first EWMA 1.797 at 2026-01-01T00:05:00Z, above the limit 1.732" in alert.what


def test_violations_inside_the_reference_do_not_fire():
    c = signal_chart(0.0)
    in_reference = dataclasses.replace(c, shewhart_violations=np.array([True, False, False,
                                                                        False]))
    assert run_rule(VIOLATION_RULE, confidence=in_reference) == []


def test_consecutive_beyond_counts_strictly_beyond_and_on_one_side():
    rule = AlertRule(name="run", kind="consecutive_beyond", signal="agreement", threshold=2.0,
                     count=3)
    # exactly 2 sigmas is not beyond: two runs of 2
    assert run_rule(rule, agreement=signal_chart(2.5, 2.5, 2.0, 2.5, 2.5)) == []
    # three beyond, but not on one side
    assert run_rule(rule, agreement=signal_chart(2.5, -2.5, 2.5)) == []
    (alert,) = run_rule(rule, agreement=signal_chart(0.0, -2.25, -2.5, -3.5, 0.0))
    assert (alert.value, alert.threshold, alert.signal) == (2.25, 2.0, "agreement")
    assert alert.what == ("agreement: 3 consecutive points below the reference mean 0 by more "
                          "than 2 sigma (each at least 2.25 sigma, sigma 1), "
                          "2026-01-01T00:04:00Z to 2026-01-01T00:06:00Z; the rule needs 3")


def test_chart_rules_cannot_fire_without_their_chart():
    assert run_rule(VIOLATION_RULE, agreement=signal_chart(3.5)) == []


def test_rules_fire_in_order():
    rules = [DRIFT_RULE, VIOLATION_RULE]
    alerts = evaluate_rules(rules, drift(0.6), {"confidence": signal_chart(3.5)}, WINDOW)
    assert [a.rule for a in alerts] == ["drift", "conf"]


# ---------------------------------------------------------------- log sink

ALERT = Alert(rule="conf", kind="control_violation", what="confidence: ...", value=3.5,
              threshold=3.0, window=WINDOW, signal="confidence")


def test_alert_json_has_every_field():
    assert json.loads(ALERT.to_json()) == dataclasses.asdict(ALERT)


def test_log_alert_is_one_json_line(caplog):
    logger = logging.getLogger("test-alerts")
    with caplog.at_level(logging.WARNING, logger="test-alerts"):
        log_alert(ALERT, logger)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert json.loads(record.getMessage()) == dataclasses.asdict(ALERT)


def test_dispatch_without_a_webhook_logs_each_alert(caplog):
    logger = logging.getLogger("test-alerts")
    with caplog.at_level(logging.WARNING, logger="test-alerts"):
        counts = dispatch([ALERT, ALERT], AlertsSpec(), logger)
    assert counts == {"alerts": 2, "webhook_delivered": 0, "webhook_failed": 0,
                      "webhook_skipped": 0, "sent": frozenset()}
    assert len(caplog.records) == 2


# ---------------------------------------------------------------- webhook sink

HOOK_ENV = "TEST_ALERT_WEBHOOK_URL"


def hook_spec(**kwargs) -> WebhookSpec:
    return WebhookSpec(url_env=HOOK_ENV, **kwargs)


@pytest.fixture
def hook(loopback, monkeypatch):
    """A local HTTP server that answers each POST with the next status of `hook.statuses`
    (200 once they run out) and records the JSON bodies."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            server.posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(server.statuses.pop(0) if server.statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.posted, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    monkeypatch.setenv(HOOK_ENV, server.url)
    yield server
    server.shutdown()
    server.server_close()


def test_post_webhook_delivers_the_alert_as_json(hook):
    assert post_webhook(ALERT, hook_spec(retries=0))
    assert hook.posted == [dataclasses.asdict(ALERT)]


def test_post_webhook_retries_5xx_with_backoff(hook):
    hook.statuses = [500, 503]
    began = time.monotonic()
    assert post_webhook(ALERT, hook_spec(retries=2))
    assert time.monotonic() - began >= 0.5 + 1.0  # backoff 0.5 s, then 1 s
    assert len(hook.posted) == 3


def test_a_failed_webhook_returns_false_and_logs_only_the_origin(hook, caplog):
    hook.statuses = [500, 500]
    with caplog.at_level(logging.ERROR, logger="distillery.monitoring.alerts"):
        assert not post_webhook(ALERT, hook_spec(retries=1))
    assert len(hook.posted) == 2
    (record,) = caplog.records
    port = hook.server_address[1]
    assert f"webhook http://127.0.0.1:{port} did not take it (HTTP 500" in record.getMessage()
    assert "secret-token" not in record.getMessage()


def test_a_webhook_that_never_answers_times_out_without_raising_or_logging_its_token(
        loopback, caplog, monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        monkeypatch.setenv(HOOK_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}/hooks/"
                                     "secret-token")
        began = time.monotonic()
        with caplog.at_level(logging.DEBUG):  # every logger, urllib3's retry warnings included
            assert not post_webhook(ALERT, hook_spec(timeout_s=0.2, retries=1))
        assert time.monotonic() - began < 2.0  # 0.2 s + backoff 0.5 s + 0.2 s
    assert caplog.records and "secret-token" not in caplog.text


def test_the_spec_names_the_webhook_variable_and_holds_no_url(monkeypatch):
    monkeypatch.setenv("HOOK_URL", "https://hooks.example.com/T/secret-token")
    spec = load_spec(REFERENCE_SPEC, ["monitor.alerts.webhook={url_env: HOOK_URL}"])
    assert spec.monitor.alerts.webhook.target().host == "hooks.example.com"
    assert "secret-token" not in spec.model_dump_json()
    with pytest.raises(SpecError, match="monitor.alerts.webhook: url: the URL comes only from "
                                        "the environment; set url_env") as err:
        load_spec(REFERENCE_SPEC, ["monitor.alerts.webhook.url=https://hooks.example.com/T/"
                                   "secret-token"])
    assert "secret-token" not in str(err.value)
    # the URL pasted where the variable's name goes: refused, and not echoed
    with pytest.raises(SpecError, match="monitor.alerts.webhook: url_env: must be the name of "
                                        "an environment variable") as err:
        load_spec(REFERENCE_SPEC, ["monitor.alerts.webhook={url_env: 'https://hooks.example."
                                   "com/T/secret-token'}"])
    assert "secret-token" not in str(err.value)


@pytest.mark.parametrize("value, message", [
    (None, "TEST_ALERT_WEBHOOK_URL is not set"),
    ("ftp://x/secret-token", "TEST_ALERT_WEBHOOK_URL is not an http:// or https:// URL")])
def test_an_unset_or_bad_webhook_variable_is_named_not_shown(value, message, monkeypatch,
                                                            caplog):
    if value is None:
        monkeypatch.delenv(HOOK_ENV, raising=False)
    else:
        monkeypatch.setenv(HOOK_ENV, value)
    with caplog.at_level(logging.ERROR, logger="distillery.monitoring.alerts"):
        assert not post_webhook(ALERT, hook_spec(retries=0))
    assert message in caplog.text and "secret-token" not in caplog.text


def test_a_closed_port_returns_false_without_raising(loopback, monkeypatch):
    monkeypatch.setenv(HOOK_ENV, f"http://127.0.0.1:{free_port()}/hook")
    assert not post_webhook(ALERT, hook_spec(timeout_s=0.2, retries=0))


def test_dispatch_counts_webhook_deliveries(hook):
    hook.statuses = [200, 404]  # a 4xx is not retried
    spec = AlertsSpec(webhook=hook_spec(retries=1))
    counts = dispatch([ALERT, ALERT], spec, logging.getLogger("test-alerts"))
    # the pair was delivered once: it counts as sent, though the second POST failed
    assert counts == {"alerts": 2, "webhook_delivered": 1, "webhook_failed": 1,
                      "webhook_skipped": 0, "sent": frozenset({("conf", "confidence")})}
    assert len(hook.posted) == 2


def test_an_alert_still_firing_is_logged_but_not_posted_again(hook, caplog):
    spec = AlertsSpec(webhook=hook_spec(retries=0))
    other = dataclasses.replace(ALERT, signal="p99_latency_ms")
    with caplog.at_level(logging.WARNING, logger="test-alerts"):
        counts = dispatch([ALERT, other], spec, logging.getLogger("test-alerts"),
                          already_sent=frozenset({("conf", "confidence")}))
    assert counts == {"alerts": 2, "webhook_delivered": 1, "webhook_failed": 0,
                      "webhook_skipped": 1, "sent": frozenset({("conf", "confidence"),
                                                               ("conf", "p99_latency_ms")})}
    assert [a["signal"] for a in hook.posted] == ["p99_latency_ms"]
    assert len(caplog.records) == 2  # both still go to the log


def test_a_failed_page_is_not_counted_as_sent(hook):
    hook.statuses = [500]
    counts = dispatch([ALERT], AlertsSpec(webhook=hook_spec(retries=0)),
                      logging.getLogger("test-alerts"))
    assert counts["webhook_failed"] == 1 and counts["sent"] == frozenset()


@pytest.mark.parametrize("rule, message", [
    ("{name: c, kind: control_violation, signal: confidence, threshold: 3}",
     r"monitor.alerts.rules.0: .*threshold: control_violation rules use the chart's own limits"),
    ("{name: d, kind: drift_share, threshold: 0.5, count: 1}",
     r"monitor.alerts.rules.0: .*count: only consecutive_beyond rules take a count"),
    ("{name: r, kind: consecutive_beyond, signal: agreement, threshold: 2}",
     r"monitor.alerts.rules.0: .*count: consecutive_beyond rules need a number of points"),
])
def test_a_rule_field_its_kind_ignores_is_refused(rule, message):
    with pytest.raises(SpecError, match=message):
        load_spec(REFERENCE_SPEC, [f"monitor.alerts.rules=[{rule}]"])
