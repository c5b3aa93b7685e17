"""The request log: one row per served instance, buffered in memory and written to the store as
Parquet files partitioned by date (`monitor/requests/date=YYYY-MM-DD/part-<ms>-<id>.parquet`).

Appending is a list append on the serving event loop; a flush swaps the buffer out and writes it
off the loop (Parquet encoding and the store write happen in a thread). Each file is written
atomically, so a crash loses at most the unflushed buffer, never a written file. When the store
fails, the rows go back into the buffer for the next flush; past `max_buffer_rows` new rows are
dropped and counted instead, so logging never blocks or fails a request.

Columns: time (timestamp[us, UTC]), request_id, row (index in the request), endpoint (the name
called), model + model_version (who answered), inputs (list<float32>; null for a text model's
rows), text and text_length (a text model's request and its length in characters; null for
numeric rows), prediction, confidence
(top-1 probability), entropy (nats), latency_ms (the answering model's call), teacher_prediction
(the teacher's top-1 when the teacher ran on the row, as the answer or as a shadow) and agrees
(student and teacher top-1 agree; only when both ran).
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillery.config import RequestLogSpec
from distillery.storage import Store
from distillery.store_layout import REQUEST_LOG

SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")),
    ("request_id", pa.string()),
    ("row", pa.int32()),
    ("endpoint", pa.string()),
    ("model", pa.string()),
    ("model_version", pa.string()),
    ("inputs", pa.list_(pa.float32())),
    ("text", pa.string()),
    ("text_length", pa.int32()),
    ("prediction", pa.int64()),
    ("confidence", pa.float32()),
    ("entropy", pa.float32()),
    ("latency_ms", pa.float32()),
    ("teacher_prediction", pa.int64()),
    ("agrees", pa.bool_()),
])


@dataclass(frozen=True)
class Entry:
    """One request as the router saw it; expanded to one row per instance at flush time."""

    time: float  # unix seconds
    request_id: str
    endpoint: str
    model: str
    model_version: str
    inputs: np.ndarray  # (B, D) float32, or (B,) the texts of a text model
    probs: np.ndarray  # (B, C) the answer
    latency_ms: float
    shadow_probs: np.ndarray | None = None  # (B, C) the other model's, when it was mirrored


def to_table(entries: list[Entry]) -> pa.Table:
    """Entries -> a table in SCHEMA, one row per instance."""
    sizes = np.array([len(e.inputs) for e in entries])
    probs = np.concatenate([e.probs for e in entries]).astype(np.float32)  # (N, C)
    prediction = probs.argmax(1)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
    teacher, agrees = [], []
    for e in entries:
        answered = e.probs.argmax(1)
        shadow = None if e.shadow_probs is None else e.shadow_probs.argmax(1)
        if e.model == "teacher":
            teacher.append(answered)
        elif shadow is not None:
            teacher.append(shadow)
        else:
            teacher.append(np.full(len(answered), -1))
        agrees.append(np.zeros(len(answered), np.int8) - 1 if shadow is None
                      else (answered == shadow).astype(np.int8))
    teacher, agrees = np.concatenate(teacher), np.concatenate(agrees)

    def repeat(values: list) -> np.ndarray:  # one value per request -> one per row
        return np.repeat(np.asarray(values), sizes)

    columns = {
        "time": pa.array(repeat([int(e.time * 1e6) for e in entries]), pa.int64()).cast(
            SCHEMA.field("time").type),
        "request_id": repeat([e.request_id for e in entries]),
        "row": np.concatenate([np.arange(n, dtype=np.int32) for n in sizes]),
        "endpoint": repeat([e.endpoint for e in entries]),
        "model": repeat([e.model for e in entries]),
        "model_version": repeat([e.model_version for e in entries]),
        **_input_columns(np.concatenate([e.inputs for e in entries])),
        "prediction": prediction.astype(np.int64),
        "confidence": probs.max(1),
        "entropy": entropy.astype(np.float32),
        "latency_ms": repeat([e.latency_ms for e in entries]).astype(np.float32),
        "teacher_prediction": pa.array(teacher, pa.int64(), mask=teacher < 0),
        "agrees": pa.array(agrees == 1, pa.bool_(), mask=agrees < 0),
    }
    return pa.table({name: pa.array(columns[name]) if isinstance(columns[name], np.ndarray)
                     else columns[name] for name in SCHEMA.names}, schema=SCHEMA)


def _input_columns(inputs: np.ndarray) -> dict[str, pa.Array]:
    """inputs, text and text_length of (N, D) numeric rows or (N,) texts (a buffer holds one
    app's requests: all rows or all texts)."""
    n = len(inputs)
    if inputs.dtype == object:
        text = pa.array(inputs.tolist(), pa.string())
        return {"inputs": pa.nulls(n, SCHEMA.field("inputs").type), "text": text,
                "text_length": pc.utf8_length(text).cast(pa.int32())}
    rows = inputs.astype(np.float32)
    return {"inputs": pa.FixedSizeListArray.from_arrays(rows.reshape(-1), rows.shape[1]).cast(
                SCHEMA.field("inputs").type),
            "text": pa.nulls(n, pa.string()), "text_length": pa.nulls(n, pa.int32())}


class RequestLog:
    """The buffer between the router and the store; `flush` runs off the event loop."""

    def __init__(self, store: Store, spec: RequestLogSpec):
        self.store, self.spec = store, spec
        self.entries: list[Entry] = []
        self.rows = 0
        self.oldest: float | None = None  # monotonic time of the oldest buffered entry
        self.dropped = 0  # rows
        self.written = 0  # rows
        self.failures = 0  # flushes the store refused
        self._flushing = threading.Lock()  # one writer at a time; appends never wait on it

    def append(self, entry: Entry) -> bool:
        """Buffer one request; False (and counted in `dropped`) when the buffer is full."""
        if self.rows + len(entry.inputs) > self.spec.max_buffer_rows:
            self.dropped += len(entry.inputs)
            return False
        if not self.entries:
            self.oldest = time.monotonic()
        self.entries.append(entry)
        self.rows += len(entry.inputs)
        return True

    def due(self) -> bool:
        return bool(self.entries) and (
            self.rows >= self.spec.flush_rows
            or time.monotonic() - self.oldest >= self.spec.flush_seconds)

    def take(self) -> list[Entry]:
        """Swap the buffer out (on the event loop, so no append interleaves)."""
        entries, self.entries, self.rows, self.oldest = self.entries, [], 0, None
        return entries

    def give_back(self, entries: list[Entry]) -> None:
        """A failed write's entries, back in front of newer ones, as far as the limit allows."""
        kept, room = [], self.spec.max_buffer_rows - self.rows
        for entry in entries:
            if len(entry.inputs) <= room:
                kept.append(entry)
                room -= len(entry.inputs)
            else:
                self.dropped += len(entry.inputs)
        if kept:
            self.entries = kept + self.entries
            self.rows += sum(len(e.inputs) for e in kept)
            self.oldest = time.monotonic() if self.oldest is None else self.oldest

    def write(self, entries: list[Entry]) -> int:
        """Write entries as one Parquet file per date; rows written. Raises what the store
        raised (the caller gives the entries back)."""
        with self._flushing:
            table = to_table(entries)
            days = pc.strftime(table["time"], format="%Y-%m-%d").to_numpy(
                zero_copy_only=False)
            for day in np.unique(days):
                part = table.filter(pa.array(days == day))
                sink = io.BytesIO()
                pq.write_table(part, sink, compression="zstd")
                name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
                self.store.write_bytes(sink.getvalue(), *REQUEST_LOG, f"date={day}", name)
            self.written += table.num_rows
            return table.num_rows


def read_requests(store: Store, start: datetime, end: datetime) -> pa.Table:
    """Logged rows with start <= time < end (timezone-aware datetimes), in time order."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("read_requests: start and end must be timezone-aware")
    tables, day = [], start.astimezone(timezone.utc).date()
    while day <= end.astimezone(timezone.utc).date():
        folder = (*REQUEST_LOG, f"date={day.isoformat()}")
        for name in store.listdir(*folder):
            if name.endswith(".parquet"):  # not a write in progress (<name>.tmp-*)
                tables.append(pq.read_table(io.BytesIO(store.read_bytes(*folder, name)),
                                            schema=SCHEMA))
        day += timedelta(days=1)
    if not tables:
        return SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    times = table["time"]
    keep = pc.and_(pc.greater_equal(times, pa.scalar(start, times.type)),
                           pc.less(times, pa.scalar(end, times.type)))
    return table.filter(keep).sort_by("time")
