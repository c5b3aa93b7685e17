"""The window a monitoring command looks at, from `--window` or `--from/--to`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(window: str | None, start: str | None, end: str | None,
                 now: datetime) -> tuple[datetime, datetime]:
    """`--window 90s|30m|1h|2d` (ending now) or `--from ISO [--to ISO]` (UTC unless an offset
    is given) -> (start, end); ValueError with a one-line reason."""
    if window is not None and (start or end):
        raise ValueError("give --window or --from/--to, not both")
    if window is not None:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", window.strip())
        if not match or float(match[1]) <= 0:
            raise ValueError(f"--window: expected a duration like 90s, 30m, 1h or 2d, got "
                             f"{window!r}")
        return now - timedelta(seconds=float(match[1]) * UNITS[match[2]]), now
    if start is None:
        raise ValueError("give --window DURATION or --from ISO-TIME")
    begin, finish = _instant(start, "--from"), _instant(end, "--to") if end else now
    if begin >= finish:
        raise ValueError(f"--from {begin.isoformat()} is not before --to {finish.isoformat()}")
    return begin, finish


def _instant(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: not an ISO time (e.g. 2026-11-29T20:00), got {text!r}"
                         ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
