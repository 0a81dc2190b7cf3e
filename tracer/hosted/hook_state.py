"""Where this process's timing records go, and what every traced connection shares.

uvicorn makes its protocol objects itself (`Config.http_protocol_class(config=...,
server_state=...)`), so the protocols cannot be handed a sink: they read this process's
`HostedHooks`, installed once before serving (`install`), and again in each gunicorn worker
after the fork (a worker is a new pid with its own writer).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from time import monotonic_ns

from tracer.server.hooks import KIND_SERVER_STARTED, WireRecord

Emit = Callable[[WireRecord], None]


class HostedHooks:
    """This process's sink (a wire-record emitter), its pid, loop thread and connection ids."""

    def __init__(self, emit: Emit, capture_headers: bool = True) -> None:
        self.emit = emit
        self.capture_headers = capture_headers
        self.pid = os.getpid()
        self._tid = 0
        self._conn_ids = itertools.count(1)

    @property
    def tid(self) -> int:
        """The event loop's thread (native id), taken on first use from the loop thread."""
        if not self._tid:
            self._tid = threading.get_native_id()
        return self._tid

    def next_conn_id(self) -> int:
        return next(self._conn_ids)

    def server_started(self) -> None:
        """Lifespan startup done and the server accepts (the ServerStarted record)."""
        self.emit((KIND_SERVER_STARTED, self.pid, self.tid, monotonic_ns()))


_current: HostedHooks | None = None


def install(hooks: HostedHooks | None) -> None:
    """Make `hooks` this process's (None: the traced protocols record nothing)."""
    global _current
    _current = hooks


def current() -> HostedHooks | None:
    return _current
