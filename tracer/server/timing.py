"""Build the timing-hook records, in wire form, from plain values and stamp lists.

The protocol and the cycle only store timestamps while they work (see hooks.py for why);
this module turns those values into wire tuples (the forms are in hooks.py), once per
event: connection opened, request cycle ended (reached the app or not), connection closed.
It knows neither the connection nor the cycle: the callers hand over what the record holds.
Nothing here runs when the timing hooks are off.
"""

from __future__ import annotations

from time import monotonic_ns
from typing import Any

from tracer.server.hooks import (
    KIND_CONNECTION_CLOSED,
    KIND_CONNECTION_OPENED,
    KIND_REQUEST_TIMING,
    WireRecord,
)

HookIds = tuple[int, int, int, int]
"""(pid, tid, fd, conn_id): made once per connection, shared by all its records."""
Headers = list[tuple[bytes, bytes]]


def connection_opened(
    hook_ids: HookIds, client: tuple[str, int] | None, local: tuple[str, int]
) -> WireRecord:
    return (KIND_CONNECTION_OPENED, *hook_ids, client or ("", 0), local, monotonic_ns())


def request_timing(
    hook_ids: HookIds,
    seq: int,
    scope: dict[str, Any],
    target: bytes,
    status: int,
    stamps: list[int],
    chunks: list[tuple[int, int]],
    request_body_bytes: int,
    response_bytes: int,
    keep_alive: bool,
    outcome: str,
    capture_headers: bool,
) -> WireRecord:
    """A request that reached the app (or was queued for it), when its cycle ends.

    The request form of the wire (see hooks.py): the target bytes, stamps list and chunks
    list go as they are; the reader splits and decodes them. The caller stops stamping once
    the record is made (the cycle's `timed` goes False), so the lists are final.
    """
    return (
        KIND_REQUEST_TIMING,
        hook_ids,
        seq,
        scope["method"],
        target,
        scope["http_version"],
        status,
        stamps,  # first byte ... response done, in field order
        chunks,
        request_body_bytes,
        response_bytes,
        keep_alive,
        outcome,
        captured_headers(scope["headers"]) if capture_headers else (),
    )


def request_refused(
    hook_ids: HookIds,
    seq: int,
    method: str,
    target: bytes,
    version: str,
    begin_ns: int,
    headers_done_ns: int,
    headers: Headers | None,
    status: int,
    outcome: str,
    response_bytes: int,
) -> WireRecord:
    """A request the server answered (or dropped) itself before any app saw it.

    `status` 0 means nothing was answered (the client left mid-head). `headers` is None
    unless the headers are captured.
    """
    now = monotonic_ns()
    return (
        KIND_REQUEST_TIMING,
        hook_ids,
        seq,
        method,
        target,
        version,
        status,
        # first byte, headers done; the body never completed, no app was called, started
        # a response or returned; the server's own answer went out now (if any)
        [
            begin_ns,
            headers_done_ns if headers_done_ns >= begin_ns else 0,
            0,
            0,
            0,
            0,
            now if status else 0,
        ],
        [(now, response_bytes)] if status else [],
        0,
        response_bytes,
        False,
        outcome,
        captured_headers(headers) if headers is not None else (),
    )


def connection_closed(hook_ids: HookIds, requests: int, reason: str, lost_ns: int) -> WireRecord:
    return (KIND_CONNECTION_CLOSED, *hook_ids, requests, reason, lost_ns or monotonic_ns())


def captured_headers(headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """The request's headers as the parser gave them: a copy of the list, nothing decoded
    on the event loop (the reader decodes them, hooks.record_from_wire)."""
    return tuple(headers)
