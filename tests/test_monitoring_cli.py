"""`distillery drift` / `monitor charts`: the window parsed exactly, bad input in one line."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from distillery.monitoring.windows import parse_window

from helpers import REFERENCE_SPEC

NOW = datetime(2026, 11, 29, 21, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("window,seconds", [("90s", 90), ("30m", 1800), ("1h", 3600),
                                            ("2d", 172800), ("1.5h", 5400)])
def test_window_durations_end_now(window, seconds):
    assert parse_window(window, None, None, NOW) == (NOW - timedelta(seconds=seconds), NOW)


def test_from_to_are_utc_unless_an_offset_is_given():
    start, end = parse_window(None, "2026-11-29T20:00", "2026-11-29T21:30+01:00", NOW)
    assert start == datetime(2026, 11, 29, 20, tzinfo=timezone.utc)
    assert end == datetime(2026, 11, 29, 20, 30, tzinfo=timezone.utc)
    assert parse_window(None, "2026-11-29T20:00", None, NOW)[1] == NOW


@pytest.mark.parametrize("window,start,end,message", [
    ("1w", None, None, "--window: expected a duration like 90s, 30m, 1h or 2d, got '1w'"),
    ("0s", None, None, "--window: expected a duration"),
    ("1h", "2026-11-29T20:00", None, "give --window or --from/--to, not both"),
    (None, None, None, "give --window DURATION or --from ISO-TIME"),
    (None, "yesterday", None, "--from: not an ISO time (e.g. 2026-11-29T20:00), got 'yesterday'"),
    (None, "2026-11-29T21:00", "2026-11-29T20:00", "is not before --to"),
])
def test_bad_windows_say_what_is_wrong(window, start, end, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_window(window, start, end, NOW)


def assert_one_line(result, expected: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_bad_window_is_one_line_from_a_fresh_process(cli, tmp_path):
    assert_one_line(cli("drift", "--window", "1w", "--config", str(REFERENCE_SPEC), "--set",
                        f"store={tmp_path}", timeout=60),
                    "error: --window: expected a duration like 90s")


def test_missing_model_is_one_line(cli_inprocess, tmp_path):
    assert_one_line(cli_inprocess("monitor", "charts", "--window", "1h", "--config",
                                  str(REFERENCE_SPEC), "--set", f"store={tmp_path}"),
                    "error: no teacher 'cnn-teacher' in")
