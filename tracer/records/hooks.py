"""What the bundled server reports about each connection and request (its timing hooks).

These are the user-space half of a request's timeline; the kernel half comes from the BPF
records (tracer/records/kernel.py). The correlator joins both on (pid, fd) and the peer address.

All timestamps are CLOCK_MONOTONIC nanoseconds (time.monotonic_ns()), the same clock as
bpf_ktime_get_ns() in the probes, so kernel and server times share one axis. A timestamp
of 0 means "did not happen" (for example no body, or the client left before the app ran).

Layout on the wire (server child -> tracer): plain tuples, `(kind, *fields)` in the field
order below for connections, a nested form for requests (see tracer/server/hooks.py),
marshalled in length-prefixed batches (tracer/server/hook_channel.py). The records are
named tuples: immutable, and built from a wire tuple in one call (a frozen dataclass took
~1.6 us per RequestTiming here, a named tuple ~0.2 us).
"""

from __future__ import annotations

from typing import NamedTuple


class ConnectionOpened(NamedTuple):
    """connection_made: a new TCP (or unix) connection was accepted by the server."""

    pid: int  # server process
    tid: int  # event-loop thread (native id)
    fd: int  # the connection's socket fd in the server process
    conn_id: int  # per-process connection counter, from 1
    peer: tuple[str, int]  # client address and port ("" and 0 for unix sockets)
    local: tuple[str, int]  # server address and port
    ts_ns: int


class RequestTiming(NamedTuple):
    """One request/response cycle, emitted once when the cycle ends (however it ends)."""

    pid: int
    tid: int
    fd: int
    conn_id: int
    seq: int  # request number on this connection, from 1 (keep-alive, pipelining)
    method: str
    path: str  # raw request target path, percent-encoded as received, without the query
    query: str
    http_version: str  # "1.0" | "1.1"
    status: int  # response status; 0 when no response was started
    first_byte_ns: int  # first byte of this request handed to the protocol (data_received)
    headers_done_ns: int  # on_headers_complete
    body_done_ns: int  # on_message_complete (0: body never completed)
    app_called_ns: int  # the ASGI app was called for this request
    response_start_ns: int  # http.response.start received from the app
    app_returned_ns: int  # the app coroutine returned (or raised)
    response_done_ns: int  # last byte of the response handed to the transport
    chunks: tuple[tuple[int, int], ...]  # (ts_ns, bytes) per transport.write, in order
    request_body_bytes: int
    response_bytes: int  # bytes written to the transport (status line, headers, body)
    keep_alive: bool
    outcome: str  # "ok" | "app_error" | "client_disconnect" | "bad_request" | "timeout" | ...
    headers: tuple[tuple[str, str], ...]  # request headers in order (empty unless captured)


def request_stamps(timing: RequestTiming) -> tuple[int, ...]:
    """The request's own stamps in field order (first byte ... response done; 0: did not
    happen), without its per-write chunk times."""
    return (
        timing.first_byte_ns,
        timing.headers_done_ns,
        timing.body_done_ns,
        timing.app_called_ns,
        timing.response_start_ns,
        timing.app_returned_ns,
        timing.response_done_ns,
    )


class ConnectionClosed(NamedTuple):
    """connection_lost: the connection ended."""

    pid: int
    tid: int
    fd: int
    conn_id: int
    requests: int  # requests served on this connection
    reason: str  # "client_closed" | "server_closed" | "keep_alive_timeout" | "error: ..."
    ts_ns: int


class ServerStarted(NamedTuple):
    """The server began serving: the app's lifespan startup completed and it accepts.

    Connections that arrived earlier waited in the accept queue while the app started:
    their first request's wait until `ts_ns` is the `startup` stage."""

    pid: int
    tid: int
    ts_ns: int


HookRecord = ConnectionOpened | RequestTiming | ConnectionClosed | ServerStarted
HOOK_RECORD_TYPES = (ConnectionOpened, RequestTiming, ConnectionClosed, ServerStarted)
