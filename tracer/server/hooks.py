"""Where the timing-hook records go: the `HookSink` protocol and the in-process sink.

Theory of operation. A hook is not a call: the protocol and the request cycle store
`time.monotonic_ns()` into preallocated slots while they work (guarded by one `if` on a
flag fixed for the server's life), and when a request cycle ends they build ONE record for
it. That record is built in its wire form, a plain tuple, because that is what the pipe to
the tracer carries and a plain tuple is the cheapest thing to build on the event loop. A
sink that implements `emit_wire` receives that tuple (the pipe channel marshals it as is);
any other sink receives the named tuple via `emit`, built once from the wire by
`record_from_wire`.

Wire forms:

    ("open", *ConnectionOpened fields)     in the field order of hook_record.py
    ("close", *ConnectionClosed fields)
    ("started", pid, tid, ts_ns)           once: lifespan startup done, the server accepts
    ("request", (pid, tid, fd, conn_id), seq, method, target, http_version, status,
                [first_byte_ns, headers_done_ns, body_done_ns, app_called_ns,
                 response_start_ns, app_returned_ns, response_done_ns],
                [(ts_ns, bytes), ...], request_body_bytes, response_bytes, keep_alive,
                outcome, ((name, value), ...))     headers as bytes, as parsed

A request is nested rather than flat: the per-connection ids are one tuple made when the
connection opens, the request target is the parser's bytes (path and query, split and
decoded by the reader), and the cycle's stamps and chunks lists go as they are. Building
it costs the event loop ~60 ns where the flat 24-field tuple with two unpackings, the
target decoded and the chunks copied cost ~250 ns per request.

Sinks are called on the server's event-loop thread, synchronously: they must not block.
If a sink has a `close()` method, the server calls it once after the last record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from tracer.records.hooks import (
    ConnectionClosed,
    ConnectionOpened,
    HookRecord,
    RequestTiming,
    ServerStarted,
)

WireRecord = tuple[object, ...]
"""A hook record as the server builds it and the pipe carries it (see the forms above)."""

KIND_CONNECTION_OPENED = "open"
KIND_REQUEST_TIMING = "request"
KIND_CONNECTION_CLOSED = "close"
KIND_SERVER_STARTED = "started"

RECORD_CLASSES: dict[
    str,
    type[ConnectionOpened] | type[RequestTiming] | type[ConnectionClosed] | type[ServerStarted],
]
RECORD_CLASSES = {
    KIND_CONNECTION_OPENED: ConnectionOpened,
    KIND_REQUEST_TIMING: RequestTiming,
    KIND_CONNECTION_CLOSED: ConnectionClosed,
    KIND_SERVER_STARTED: ServerStarted,
}
KIND_OF_CLASS = {cls: kind for kind, cls in RECORD_CLASSES.items()}
FIELD_NAMES = {kind: cls._fields for kind, cls in RECORD_CLASSES.items()}
STAMP_FIELDS = tuple(name for name in RequestTiming._fields if name.endswith("_ns"))
"""The timestamps a request's wire record carries as one list, in field order."""
REQUEST_WIRE_LENGTH = 14


class HookWireError(ValueError):
    """A wire tuple that is not a known record kind with the right number of fields."""


@runtime_checkable
class HookSink(Protocol):
    """Receives one record per connection opened, request cycle ended, connection closed."""

    def emit(self, record: HookRecord) -> None: ...


@runtime_checkable
class WireHookSink(HookSink, Protocol):
    """A sink that takes the wire tuple directly, skipping the named tuple (the fast path)."""

    def emit_wire(self, wire: WireRecord) -> None: ...


def record_from_wire(wire: WireRecord) -> HookRecord:
    """The record (a named tuple) of a wire tuple; raises HookWireError if it does not fit."""
    if not isinstance(wire, tuple) or not wire:
        raise HookWireError(f"hook record must be a non-empty tuple, got {type(wire).__name__}")
    kind = wire[0]
    if kind == KIND_REQUEST_TIMING:
        return _request_from_wire(wire)
    cls = RECORD_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise HookWireError(f"unknown hook record kind {kind!r}")
    expected = len(FIELD_NAMES[kind])  # type: ignore[index]
    if len(wire) - 1 != expected:
        raise HookWireError(f"{kind} record has {len(wire) - 1} fields, expected {expected}")
    return cls._make(wire[1:])


def _request_from_wire(wire: WireRecord) -> RequestTiming:
    if len(wire) != REQUEST_WIRE_LENGTH:
        raise HookWireError(f"request record has {len(wire)} items, expected {REQUEST_WIRE_LENGTH}")
    (_, ids, seq, method, target, version, status, stamps, chunks, *rest) = wire
    if not isinstance(ids, tuple) or len(ids) != 4:
        raise HookWireError(f"request record ids must be (pid, tid, fd, conn_id), got {ids!r}")
    if not isinstance(target, bytes):
        raise HookWireError(f"request target must be bytes, got {type(target).__name__}")
    if not isinstance(stamps, list | tuple) or len(stamps) != len(STAMP_FIELDS):
        raise HookWireError(f"request record needs {len(STAMP_FIELDS)} stamps, got {stamps!r}")
    if not isinstance(chunks, list | tuple):
        raise HookWireError(f"request chunks must be a list, got {type(chunks).__name__}")
    path, _, query = target.decode("latin-1").partition("?")
    headers = rest[-1]
    if headers:
        rest[-1] = _decoded_headers(headers)
    return RequestTiming._make(
        (*ids, seq, method, path, query, version, status, *stamps, tuple(chunks), *rest)
    )


def _decoded_headers(headers: object) -> tuple[tuple[str, str], ...]:
    """The wire's (bytes, bytes) header pairs as text (latin-1, as HTTP/1.1 allows)."""
    if not isinstance(headers, list | tuple):
        raise HookWireError(f"request headers must be a list, got {type(headers).__name__}")
    try:
        return tuple(
            (
                name.decode("latin-1") if isinstance(name, bytes) else str(name),
                value.decode("latin-1") if isinstance(value, bytes) else str(value),
            )
            for name, value in headers
        )
    except (TypeError, ValueError):
        raise HookWireError(f"request headers must be name/value pairs, got {headers!r}") from None


def wire_from_record(record: HookRecord) -> WireRecord:
    """The wire tuple of a record (for sinks handed a record by other code)."""
    if type(record) is RequestTiming:
        target = f"{record.path}?{record.query}" if record.query else record.path
        return (
            KIND_REQUEST_TIMING,
            (record.pid, record.tid, record.fd, record.conn_id),
            record.seq,
            record.method,
            target.encode("latin-1"),
            record.http_version,
            record.status,
            [getattr(record, name) for name in STAMP_FIELDS],
            list(record.chunks),
            record.request_body_bytes,
            record.response_bytes,
            record.keep_alive,
            record.outcome,
            tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in record.headers),
        )
    return (KIND_OF_CLASS[type(record)], *record)


class CallbackSink:
    """In-process sink: calls `callback(record)` with each record (a named tuple)."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[HookRecord], None]) -> None:
        self._callback = callback

    def emit(self, record: HookRecord) -> None:
        self._callback(record)

    def emit_wire(self, wire: WireRecord) -> None:
        self._callback(record_from_wire(wire))


def wire_emitter(sink: HookSink) -> Callable[[WireRecord], None]:
    """The function the server calls with each wire tuple for `sink`."""
    emit_wire = getattr(sink, "emit_wire", None)
    if callable(emit_wire):
        return emit_wire  # type: ignore[no-any-return]
    emit = sink.emit
    return lambda wire: emit(record_from_wire(wire))
