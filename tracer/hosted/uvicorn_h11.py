"""uvicorn's H11Protocol with reqtrace's timing hooks (`--http h11`, or auto without httptools).

h11 has no parser callbacks: the head and body are events that uvicorn's `handle_events`
takes from `self.conn.next_event()`. So the connection object uvicorn's code (and each
request cycle) uses is wrapped: `next_event` stamps the head, body and body end as it hands
each event over. Everything else is h11's own Connection.
"""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tracer.hosted.connection_timing import ConnectionTiming
from tracer.hosted.hook_state import HostedHooks, current


class TracedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reqtrace = ConnectionTiming(current() or HostedHooks(_discard), self.app)
        self.app = self.reqtrace.app
        self.conn = TimedH11Connection(self.conn, self.reqtrace)  # type: ignore[assignment]

    def connection_made(self, transport: Any) -> None:
        super().connection_made(self.reqtrace.wrap(transport))
        self.reqtrace.opened(self.client, self.server)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reqtrace.closed(exc)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.reqtrace.received()
        super().data_received(data)

    def timeout_keep_alive_handler(self) -> None:
        self.reqtrace.close_reason = "keep_alive_timeout"
        super().timeout_keep_alive_handler()


class TimedH11Connection:
    """h11.Connection with `next_event` stamping the request events it returns."""

    __slots__ = ("_conn", "_timing", "receive_data", "send", "start_next_cycle")

    def __init__(self, conn: h11.Connection, owner: ConnectionTiming) -> None:
        self._conn = conn
        self._timing = owner
        self.receive_data = conn.receive_data
        self.send = conn.send
        self.start_next_cycle = conn.start_next_cycle

    def next_event(self) -> Any:
        event = self._conn.next_event()
        kind = type(event)
        if kind is h11.Request:
            self._timing.head_done(None)
        elif kind is h11.Data:
            self._timing.body(len(event.data))  # type: ignore[union-attr]
        elif kind is h11.EndOfMessage:
            self._timing.body_done()
        return event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _discard(_wire: object) -> None:
    """The sink of a protocol used with no hooks installed (records nothing)."""
