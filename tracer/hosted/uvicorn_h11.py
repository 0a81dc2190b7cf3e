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
from tracer.hosted.timed_protocol import TimedProtocol


class TracedH11Protocol(TimedProtocol, H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_timing()
        self.conn = TimedH11Connection(self.conn, self.reqtrace)  # type: ignore[assignment]


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
            self._timing.head_done(None, event)
        elif kind is h11.Data:
            self._timing.body(len(event.data))  # type: ignore[union-attr]
        elif kind is h11.EndOfMessage:
            self._timing.body_done()
        return event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
