"""Raw-record files: every input the correlator got, in order, so a run can be replayed.

    correlator = LoggingCorrelator(Correlator(), RawLogWriter("run.raw.jsonl"))
    ... use it exactly like a Correlator ...
    traces = replay("run.raw.jsonl")          # the same traces, offline

JSON Lines. The first line is {"kind": "raw_header", "schema": "reqtrace.raw/1", ...}.
Then one line per correlator input, in the order the correlator received them:

- kernel records as records.to_json() makes them ("kind": "recv", "send", ...);
- hook records as {"kind": "hook_connection_opened" | "hook_request" |
  "hook_connection_closed", <their fields>};
- {"kind": "tick", "ts_ns": N} for Correlator.advance(N) and {"kind": "lost",
  "count": N} for note_lost_records(N): they change what the correlator emits, so an
  exact replay needs them in their place.

Header values that carry credentials are redacted like in recordings unless asked not to,
also in the first bytes of requests and responses that `attach` captures in the kernel.
A header "correlator": "kernel_only" says the records were correlated without hooks
(`reqtrace attach`, or a server reqtrace could not hook): replay() then uses the
KernelOnlyCorrelator, as the live session did.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tracer.correlate.correlator import Correlator, CorrelatorStats, FeedRecord
from tracer.correlate.kernel_only import KernelOnlyCorrelator
from tracer.model.trace import RequestTrace
from tracer.recording.writer import open_private, redact_head, redact_headers
from tracer.records import kernel as records
from tracer.records.hooks import (
    HOOK_RECORD_TYPES,
    ConnectionClosed,
    ConnectionOpened,
    RequestTiming,
    ServerStarted,
)

RAW_SCHEMA = "reqtrace.raw/1"
KERNEL_ONLY = "kernel_only"  # the header's "correlator" for records correlated without hooks

AnyCorrelator = Correlator | KernelOnlyCorrelator

HOOK_KINDS: dict[type, str] = {
    ConnectionOpened: "hook_connection_opened",
    RequestTiming: "hook_request",
    ConnectionClosed: "hook_connection_closed",
    ServerStarted: "hook_server_started",
}
HOOK_CLASSES = {kind: cls for cls, kind in HOOK_KINDS.items()}


@dataclass(frozen=True, slots=True)
class Tick:
    """Correlator.advance(ts_ns) happened here."""

    ts_ns: int


@dataclass(frozen=True, slots=True)
class LostRecords:
    """Correlator.note_lost_records(count) happened here."""

    count: int


RawEntry = FeedRecord | Tick | LostRecords


class RawLogError(ValueError):
    """A line of a raw-record file cannot be read; the message names the line."""


def entry_to_json(entry: RawEntry, *, redact: bool = True) -> dict[str, Any]:
    """One line of a raw-record file (credentials in headers redacted unless asked)."""
    if isinstance(entry, Tick):
        return {"kind": "tick", "ts_ns": entry.ts_ns}
    if isinstance(entry, LostRecords):
        return {"kind": "lost", "count": entry.count}
    if isinstance(entry, HOOK_RECORD_TYPES):
        out: dict[str, Any] = {"kind": HOOK_KINDS[type(entry)]}
        out.update(entry._asdict())
        if redact and isinstance(entry, RequestTiming) and entry.headers:
            out["headers"] = redact_headers(entry.headers)
        return out
    out = records.to_json(entry)
    if redact and isinstance(entry, records.RecvRecord | records.SendRecord) and entry.head:
        out["head"] = redact_head(entry.head).decode("latin-1")
    return out


def entry_from_json(data: dict[str, Any]) -> RawEntry:
    """The entry of one line; raises KeyError/TypeError/ValueError when it does not fit."""
    kind = data.get("kind")
    if kind == "tick":
        return Tick(int(data["ts_ns"]))
    if kind == "lost":
        return LostRecords(int(data["count"]))
    cls = HOOK_CLASSES.get(str(kind))
    if cls is None:
        return records.from_json(data)
    values = {k: v for k, v in data.items() if k != "kind"}
    if cls is ConnectionOpened:
        values["peer"] = (str(values["peer"][0]), int(values["peer"][1]))
        values["local"] = (str(values["local"][0]), int(values["local"][1]))
    elif cls is RequestTiming:
        values["chunks"] = tuple((int(ts), int(size)) for ts, size in values["chunks"])
        values["headers"] = tuple((str(k), str(v)) for k, v in values["headers"])
    return cls(**values)  # type: ignore[no-any-return]


class RawLogWriter:
    """Appends correlator inputs to a raw-record file (0600, owned by the invoking user)."""

    def __init__(
        self, path: str, *, redact: bool = True, header: dict[str, Any] | None = None
    ) -> None:
        self.path = path
        self.redact = redact
        self.entries = 0
        raw = io.FileIO(open_private(path), "w", closefd=True)
        self._file: io.BufferedWriter | None = io.BufferedWriter(raw, buffer_size=1 << 16)
        first = {"kind": "raw_header", "schema": RAW_SCHEMA, **(header or {})}
        self._line(first)

    def _line(self, obj: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"raw log {self.path} is closed")
        self._file.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def write(self, entry: RawEntry) -> None:
        self._line(entry_to_json(entry, redact=self.redact))
        self.entries += 1

    def flush(self) -> None:
        """Hand buffered lines to the kernel (the live loop calls this once per batch)."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def __enter__(self) -> RawLogWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_raw_log(path: str, problems: list[str] | None = None) -> Iterator[RawEntry]:
    """The entries of a raw-record file, in order.

    A bad line raises RawLogError naming it, unless `problems` is given: then it is noted
    there ("line N: ...") and skipped, and the good lines still come through.
    """
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                if data.get("kind") == "raw_header":
                    if data.get("schema") != RAW_SCHEMA:
                        raise ValueError(f"schema {data.get('schema')!r} is not {RAW_SCHEMA!r}")
                    continue
                entry = entry_from_json(data)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                cut = "" if raw.endswith(b"\n") else " (truncated: the file was cut short)"
                message = f"line {number}: {type(exc).__name__}: {exc}{cut}"
                if problems is None:
                    raise RawLogError(message) from None
                problems.append(message)
                continue
            yield entry


def feed_entries(correlator: AnyCorrelator, entries: Iterable[RawEntry]) -> list[RequestTrace]:
    """Feed inputs to a correlator exactly as a live run did; return what it emitted."""
    out: list[RequestTrace] = []
    for entry in entries:
        if isinstance(entry, Tick):
            out.extend(correlator.advance(entry.ts_ns))
        elif isinstance(entry, LostRecords):
            correlator.note_lost_records(entry.count)
        else:
            out.extend(correlator.feed(entry))
    return out


def raw_log_header(path: str) -> dict[str, Any]:
    """The header line of a raw-record file ({} when the first line is not one)."""
    with open(path, "rb") as file:
        first = file.readline()
    try:
        data = json.loads(first)
    except ValueError:
        return {}
    return data if isinstance(data, dict) and data.get("kind") == "raw_header" else {}


def replay(
    path: str, correlator: AnyCorrelator | None = None, problems: list[str] | None = None
) -> list[RequestTrace]:
    """Every trace a run gave, rebuilt offline from its raw-record file (flushed at the end),
    by the kind of correlator its header names unless one is given."""
    if correlator is None:
        kernel_only = raw_log_header(path).get("correlator") == KERNEL_ONLY
        correlator = KernelOnlyCorrelator() if kernel_only else Correlator()
    out = feed_entries(correlator, read_raw_log(path, problems))
    out.extend(correlator.flush())
    return out


class LoggingCorrelator:
    """A Correlator that first writes each input to a raw-record file (same API)."""

    def __init__(self, correlator: AnyCorrelator, writer: RawLogWriter) -> None:
        self.correlator = correlator
        self.writer = writer

    @property
    def stats(self) -> CorrelatorStats:
        return self.correlator.stats

    def feed(self, record: FeedRecord) -> list[RequestTrace]:
        self.writer.write(record)
        return self.correlator.feed(record)

    def advance(self, now_ns: int) -> list[RequestTrace]:
        self.writer.write(Tick(now_ns))
        return self.correlator.advance(now_ns)

    def note_lost_records(self, count: int) -> None:
        self.writer.write(LostRecords(count))
        self.correlator.note_lost_records(count)

    def flush(self) -> list[RequestTrace]:
        out = self.correlator.flush()
        self.writer.flush()
        return out
