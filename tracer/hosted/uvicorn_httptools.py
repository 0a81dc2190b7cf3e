"""uvicorn's HttpToolsProtocol with reqtrace's timing hooks (`--http httptools`, or auto).

Each override stamps, then hands over to uvicorn's own method (connection_timing.py says
what each stamp is). The constructor takes uvicorn's arguments as they are: they differ
across versions (0.20 has no `app_state`).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tracer.hosted.connection_timing import ConnectionTiming
from tracer.hosted.hook_state import HostedHooks, current


class TracedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reqtrace = ConnectionTiming(current() or HostedHooks(_discard), self.app)
        self.app = self.reqtrace.app

    def connection_made(self, transport: Any) -> None:
        super().connection_made(self.reqtrace.wrap(transport))
        self.reqtrace.opened(self.client, self.server)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reqtrace.closed(exc)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.reqtrace.received()
        super().data_received(data)

    def on_message_begin(self) -> None:
        self.reqtrace.begin()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.reqtrace.head_done(self.scope)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.reqtrace.body(len(body))
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reqtrace.body_done()

    def timeout_keep_alive_handler(self) -> None:
        self.reqtrace.close_reason = "keep_alive_timeout"
        super().timeout_keep_alive_handler()


def _discard(_wire: object) -> None:
    """The sink of a protocol used with no hooks installed (records nothing)."""
