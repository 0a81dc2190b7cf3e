"""uvicorn's HttpToolsProtocol with reqtrace's timing hooks (`--http httptools`, or auto).

Each override stamps, then hands over to uvicorn's own method (connection_timing.py says
what each stamp is). The constructor takes uvicorn's arguments as they are: they differ
across versions (0.20 has no `app_state`).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tracer.hosted.timed_protocol import TimedProtocol


class TracedHttpToolsProtocol(TimedProtocol, HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_timing()

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
