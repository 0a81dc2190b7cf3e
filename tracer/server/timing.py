"""Build the timing-hook records, in wire form, from a connection's and a cycle's slots.

The protocol and the cycle only store timestamps while they work (see hooks.py for why);
this module turns those slots into wire tuples (the forms are in hooks.py), once per event:
connection opened, request cycle ended (reached the app or not), connection closed.
Nothing here runs when the timing hooks are off.
"""

from __future__ import annotations

from time import monotonic_ns
from typing import TYPE_CHECKING

from tracer.server.hooks import (
    KIND_CONNECTION_CLOSED,
    KIND_CONNECTION_OPENED,
    KIND_REQUEST_TIMING,
    WireRecord,
)

if TYPE_CHECKING:
    from tracer.server.cycle import RequestCycle
    from tracer.server.protocol import HttpProtocol


def connection_opened(protocol: HttpProtocol) -> WireRecord:
    return (
        KIND_CONNECTION_OPENED,
        *protocol.hook_ids,  # pid, tid, fd, conn_id
        protocol.client or ("", 0),
        protocol.local,
        monotonic_ns(),
    )


def request_timing(cycle: RequestCycle) -> WireRecord:
    """A request that reached the app (or was queued for it), when its cycle ends.

    The request form of the wire (see hooks.py): the cycle's own target bytes, stamps list
    and chunks list go as they are; the reader splits and decodes them. The cycle stops
    stamping once its record is made (protocol.cycle_finished), so the lists are final.
    """
    protocol = cycle.protocol
    scope = cycle.scope
    return (
        KIND_REQUEST_TIMING,
        protocol.hook_ids,
        cycle.seq,
        scope["method"],
        cycle.target,
        scope["http_version"],
        cycle.status,
        cycle.stamps,  # first byte ... response done, in field order
        cycle.chunks,
        cycle.request_body_bytes,
        cycle.response_bytes,
        cycle.keep_alive,
        cycle.outcome,
        captured_headers(scope["headers"]) if protocol.state.capture_headers else (),
    )


def request_refused(
    protocol: HttpProtocol, status: int, outcome: str, response_bytes: int
) -> WireRecord:
    """A request the server answered (or dropped) itself before any app saw it.

    `status` 0 means nothing was answered (the client left mid-head). Method and version
    are only known once the request line was parsed, which a non-empty target proves.
    """
    state = protocol.state
    parser = protocol.parser
    target = protocol.url
    method = version = ""
    if target:
        method = parser.get_method().decode("ascii", "replace")
        version = parser.get_http_version()
    begin = protocol.begin_ns
    headers_done = protocol.headers_done_ns if protocol.headers_done_ns >= begin else 0
    now = monotonic_ns()
    return (
        KIND_REQUEST_TIMING,
        protocol.hook_ids,
        protocol.requests,
        method,
        target,
        version,
        status,
        # first byte, headers done; the body never completed, no app was called, started
        # a response or returned; the server's own answer went out now (if any)
        [begin, headers_done, 0, 0, 0, 0, now if status else 0],
        [(now, response_bytes)] if status else [],
        0,
        response_bytes,
        False,
        outcome,
        captured_headers(protocol.headers) if state.capture_headers else (),
    )


def connection_closed(protocol: HttpProtocol) -> WireRecord:
    return (
        KIND_CONNECTION_CLOSED,
        *protocol.hook_ids,  # pid, tid, fd, conn_id
        protocol.requests,
        protocol.close_reason,
        protocol.lost_ns or monotonic_ns(),
    )


def captured_headers(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers)
