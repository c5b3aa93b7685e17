"""The request log: rows per instance, buffering, drops, and date-partitioned Parquet files."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from distillery.config import RequestLogSpec
from distillery.monitoring.request_log import Entry, RequestLog, read_requests, to_table
from distillery.storage import Store

NOON = datetime(2026, 11, 29, 12, tzinfo=timezone.utc).timestamp()


def entry(t: float, model: str = "student", rows: int = 2, shadow: bool = False,
          request_id: str = "r") -> Entry:
    probs = np.tile(np.array([[0.7, 0.2, 0.1]], np.float32), (rows, 1))
    other = np.tile(np.array([[0.1, 0.8, 0.1]], np.float32), (rows, 1))
    other[0] = [0.6, 0.3, 0.1]  # the shadow agrees on row 0 only
    return Entry(t, request_id, "mnist1d", model, "v1", np.arange(rows * 4, dtype=np.float32)
                 .reshape(rows, 4), probs, 3.5, other if shadow else None)


def test_rows_per_instance_with_teacher_prediction_and_agreement():
    table = to_table([entry(NOON, "student", shadow=True, request_id="a"),
                      entry(NOON + 1, "teacher", rows=1, request_id="b"),
                      entry(NOON + 2, "student", rows=1, request_id="c")])
    rows = table.to_pylist()
    assert [r["request_id"] for r in rows] == ["a", "a", "b", "c"]
    assert [r["row"] for r in rows] == [0, 1, 0, 0]
    assert [r["prediction"] for r in rows] == [0, 0, 0, 0]
    assert [r["teacher_prediction"] for r in rows] == [0, 1, 0, None]
    assert [r["agrees"] for r in rows] == [True, False, None, None]
    assert rows[1]["inputs"] == [4.0, 5.0, 6.0, 7.0]
    assert rows[0]["confidence"] == pytest.approx(0.7)
    entropy = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert rows[0]["entropy"] == pytest.approx(entropy, rel=1e-6)
    assert rows[2]["time"] == datetime.fromtimestamp(NOON + 1, timezone.utc)


def test_buffer_is_due_by_rows_and_drops_past_its_limit():
    log = RequestLog(Store("unused"), RequestLogSpec(flush_rows=4, flush_seconds=3600,
                                                     max_buffer_rows=5))
    assert log.append(entry(NOON)) and not log.due()
    assert log.append(entry(NOON)) and log.due()  # 4 rows
    assert not log.append(entry(NOON))  # 6 > 5: dropped, counted
    assert (log.rows, log.dropped) == (4, 2)
    taken = log.take()
    assert len(taken) == 2 and log.rows == 0 and not log.due()
    log.append(entry(NOON, rows=1))
    log.give_back(taken)  # room for 4 of the 5 rows: both entries fit, older ones first
    assert [len(e.inputs) for e in log.entries] == [2, 2, 1] and log.rows == 5
    log.give_back([entry(NOON)])
    assert log.dropped == 4


def test_buffer_is_due_by_age():
    log = RequestLog(Store("unused"), RequestLogSpec(flush_rows=1000, flush_seconds=0.01))
    log.append(entry(NOON))
    log.oldest -= 1
    assert log.due()


def test_files_are_partitioned_by_date_and_read_back_by_time(tmp_path):
    store = Store(str(tmp_path))
    log = RequestLog(store, RequestLogSpec())
    midnight = datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp()
    assert log.write([entry(midnight - 1, request_id="late"), entry(midnight + 1,
                                                                    request_id="early")]) == 4
    days = store.listdir("monitor", "requests")
    assert days == ["date=2026-11-29", "date=2026-11-30"]
    # a write in progress is never read
    (tmp_path / "monitor" / "requests" / days[0] / "part-1.parquet.tmp-ab").write_bytes(b"x")
    start = datetime(2026, 11, 29, 23, 59, 59, tzinfo=timezone.utc)
    table = read_requests(store, start, datetime(2026, 11, 30, 1, tzinfo=timezone.utc))
    assert table.column("request_id").to_pylist() == ["late", "late", "early", "early"]
    later = read_requests(store, datetime(2026, 11, 30, tzinfo=timezone.utc),
                          datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert later.num_rows == 2
    empty = read_requests(store, datetime(2026, 1, 1, tzinfo=timezone.utc),
                          datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert empty.num_rows == 0 and empty.schema.names == table.schema.names


def test_a_failed_write_raises_and_keeps_nothing_half_written(tmp_path):
    (tmp_path / "monitor").write_text("a file where the log directory should be")
    log = RequestLog(Store(str(tmp_path)), RequestLogSpec())
    log.append(entry(NOON))
    entries = log.take()
    with pytest.raises(OSError):
        log.write(entries)
    log.give_back(entries)
    assert log.rows == 2 and log.written == 0
