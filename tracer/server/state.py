"""State shared by all connections of one server, in one place (uvicorn's ServerState).

Connections read the pre-encoded Date/Server header lines from here on every response; a
timer in main.py refreshes them once a second, so no response formats a date.

The state knows connections only as `Connection`, the two calls a shutdown makes on them,
so this module depends on no connection code (protocol.py depends on it, not the reverse).
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from tracer.server.config import ASGIApp, Config
from tracer.server.hooks import WireRecord

SERVER_HEADER_LINE = b"server: reqtrace\r\n"


class Connection(Protocol):
    """What the server asks of an open connection when it stops (protocol.HttpProtocol)."""

    def shutdown(self) -> None:
        """Graceful: close when idle, else after the response in flight."""

    def abort(self) -> None:
        """Forced: cancel the app tasks and drop the connection."""


class ServerState:
    """What every connection of the server shares; built once per server."""

    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        app_state: dict[str, Any],
        emit_hook: Callable[[WireRecord], None] | None,
    ) -> None:
        self.config = config
        self.app = app
        self.app_state = app_state  # lifespan state; each request's scope gets a shallow copy
        self.emit_hook = emit_hook  # None: hooks off (the protocol checks this once per step)
        self.capture_headers = config.hook_capture_headers
        self.pid = os.getpid()
        self.tid = threading.get_native_id()  # set again by the loop thread in main.py
        self.connections: set[Connection] = set()  # open, or with an app still running
        self.active_requests = 0  # ASGI request tasks running (for --limit-concurrency)
        self.total_requests = 0
        self.next_conn_id = 1
        self.shutting_down = False
        # Decided once: a disabled access log costs nothing per request.
        access_logger = logging.getLogger("reqtrace.access")
        self.access_log = config.access_log and access_logger.isEnabledFor(logging.INFO)
        self.default_head = b""
        self.refresh_default_head()

    def refresh_default_head(self) -> None:
        """Re-encode the `date:`/`server:` lines every response starts with."""
        head = b""
        if self.config.date_header:
            head += b"date: " + email.utils.formatdate(usegmt=True).encode("ascii") + b"\r\n"
        if self.config.server_header:
            head += SERVER_HEADER_LINE
        self.default_head = head
