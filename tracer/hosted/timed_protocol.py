"""What both hooked uvicorn protocols share: the connection's hooks, mixed in before uvicorn's
class (`class Traced(TimedProtocol, HttpToolsProtocol)`): each method stamps, then hands
over to uvicorn's own."""

from __future__ import annotations

from typing import Any

from tracer.hosted.connection_timing import ConnectionTiming
from tracer.hosted.hook_state import HostedHooks, current


def _discard(_wire: object) -> None:
    """The sink of a protocol used with no hooks installed (records nothing)."""


class TimedProtocol:
    reqtrace: ConnectionTiming
    app: Any
    client: Any
    server: Any

    def _start_timing(self) -> None:
        """After uvicorn's __init__: the hooks, and the app wrapped to stamp its steps."""
        self.reqtrace = ConnectionTiming(current() or HostedHooks(_discard), self.app)
        self.app = self.reqtrace.app

    def connection_made(self, transport: Any) -> None:
        super().connection_made(self.reqtrace.wrap(transport))  # type: ignore[misc]
        self.reqtrace.opened(self.client, self.server)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reqtrace.closed(exc)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        self.reqtrace.received()
        super().data_received(data)  # type: ignore[misc]

    def timeout_keep_alive_handler(self) -> None:
        self.reqtrace.close_reason = "keep_alive_timeout"
        super().timeout_keep_alive_handler()  # type: ignore[misc]
