"""runtime.py's console: Ray's own logs quiet by default, shown with -v (DISTILLERY_VERBOSE=1)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import ray
import yaml

from distillery import runtime
from distillery.cli import main
from distillery.train import console_level, eta, shows_epoch

ROOT = Path(__file__).resolve().parents[1]
SET_BY_ENSURE_RAY = ("RAY_DATA_LOGGING_CONFIG", "PYTHONWARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS",
                     "RAY_TRAIN_ENABLE_PRINT_PATCH",
                     "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")


@pytest.fixture
def fake_init(monkeypatch):
    """ensure_ray with ray.init recorded, not run; the environment it sets is undone after."""
    import ray.data._internal.logging as data_logging

    for name in (*SET_BY_ENSURE_RAY, runtime.VERBOSE_ENV, "RAY_ADDRESS"):
        monkeypatch.setenv(name, "")  # remembers the value before, for the teardown
        monkeypatch.delenv(name)
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    # this process's ray.data logger stays as it is
    monkeypatch.setattr(data_logging, "configure_logging", lambda: calls.append("data logging"))
    return calls


def test_ensure_ray_is_quiet_by_default(fake_init):
    runtime.ensure_ray()
    assert fake_init == ["data logging", {"logging_level": logging.WARNING}]
    assert os.environ["RAY_DATA_LOGGING_CONFIG"] == str(runtime.QUIET_RAY_DATA_LOGGING)
    assert os.environ["PYTHONWARNINGS"] == "ignore::DeprecationWarning"
    assert runtime.train_log_level() == "WARNING"


def test_verbose_env_lets_ray_speak(fake_init, monkeypatch):
    monkeypatch.setenv(runtime.VERBOSE_ENV, "1")
    runtime.ensure_ray()
    assert fake_init == [{"logging_level": logging.INFO}]
    assert "RAY_DATA_LOGGING_CONFIG" not in os.environ and "PYTHONWARNINGS" not in os.environ
    assert runtime.train_log_level() == "INFO"


def test_quiet_env():
    assert runtime.quiet_env(verbose=True) == {}
    assert set(runtime.quiet_env(verbose=False)) == {"RAY_DATA_LOGGING_CONFIG", "PYTHONWARNINGS",
                                                     "HF_HUB_DISABLE_PROGRESS_BARS"}


def test_quiet_ray_data_logging_is_ray_datas_default_with_the_console_at_warning():
    """The shipped file is Ray Data's own default (text encoding) but for the console level, so
    ray-data.log keeps every record; a Ray upgrade that changes the default fails here."""
    from ray.data._internal.logging import DEFAULT_CONFIG

    quiet = yaml.safe_load(runtime.QUIET_RAY_DATA_LOGGING.read_text())
    expected = {
        **DEFAULT_CONFIG,
        "formatters": {"ray": DEFAULT_CONFIG["formatters"]["ray"]},
        "filters": {"console_filter": DEFAULT_CONFIG["filters"]["console_filter"]},
        "handlers": {"file": DEFAULT_CONFIG["handlers"]["file"],
                     "console": {**DEFAULT_CONFIG["handlers"]["console"], "level": "WARNING"}},
    }
    assert quiet == expected


def test_cli_verbose_flag_sets_the_env_ensure_ray_reads(monkeypatch, capsys):
    monkeypatch.setenv(runtime.VERBOSE_ENV, "0")  # restored (unset) after the test
    assert main(["validate", "--config", str(ROOT / "jobs/configs/mnist1d.yaml")]) == 0
    assert not runtime.verbose()
    assert main(["validate", "--config", str(ROOT / "jobs/configs/mnist1d.yaml"), "-v"]) == 0
    assert runtime.verbose()
    capsys.readouterr()


@pytest.mark.parametrize(("seconds", "remaining", "text"), [
    ([10.0, 20.0], 3, "ETA 0m45s"),  # 3 x the mean, 15 s
    ([61.4], 1, "ETA 1m01s"),
    ([0.4], 2, "ETA 0m01s"),
    ([10.0], 0, "done"),
])
def test_eta(seconds, remaining, text):
    assert eta(seconds, remaining) == text


@pytest.mark.parametrize(("epochs", "shown"), [
    (3, [1, 2, 3]),
    (20, list(range(1, 21))),
    (60, [1, *range(3, 61, 3)]),  # the quickstart teacher's 60: 21 lines
    (41, [1, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 41]),
])
def test_a_long_run_prints_about_twenty_epoch_lines_with_the_first_and_the_last(epochs, shown):
    assert [e + 1 for e in range(epochs) if shows_epoch(e, epochs)] == shown


def test_console_level_sets_the_console_handler_of_the_root_logger_only():
    from ray._private.log import PlainRayHandler

    console, log_file = PlainRayHandler(), logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(console)
    root.addHandler(log_file)
    try:
        console_level("WARNING")
        assert (console.level, log_file.level) == (logging.WARNING, logging.NOTSET)
    finally:
        root.removeHandler(console)
        root.removeHandler(log_file)
