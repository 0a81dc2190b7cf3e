"""Where the dashboard's traces come from: a live run, or a recording on disk.

The dashboard calls `take()` (new traces since the last call) and `status()` from its UI
timer; both answer instantly. A recording hands over its traces once.

A live run does not hand traces to the UI at all: threads collect, the UI renders. The
tracer's pipeline thread calls `put()`, which adds each batch to the feed's TraceStore
(streaming aggregates, a bounded ring of recent traces, the thinned list; O(1) work per
request, under the store's lock) on that thread; the UI takes only what it shows (the
list's rows, a few figures) a few times a second, so its work per frame follows the screen,
not the request rate, and it never falls behind or drops anything. The traces the store
does not keep are freed on the pipeline thread, as they would be without a dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dashboards.trace_store import TraceStore
from tracer.model.trace import RequestTrace


@dataclass
class RunInfo:
    """Static facts the header shows."""

    title: str  # "main:app" or "recording trace.jsonl"
    address: str = ""
    server_pid: int = 0
    runs_as: str = ""  # "alice", or "root" (said loudly)
    coverage: dict[str, str] = field(default_factory=dict)  # probe point -> mechanism/absent
    clock_offset_ns: int | None = None  # wall clock - monotonic clock, when known
    live: bool = True
    recording_path: str = ""
    header: dict[str, Any] = field(default_factory=dict)  # recording header, for ctrl+s
    mode: str = ""  # "attach": no hooks in the server (kernel and syscall stages only)
    limits: str = ""  # what this mode cannot see, and why (the header says so)


@dataclass
class FeedStatus:
    lost_records: int = 0
    ended: bool = False  # no more traces will come (recording loaded, or the run stopped)
    message: str = ""  # e.g. "server exited with status 1"
    open_fds: int | None = None
    fd_limit: int | None = None
    rcvbuf: int | None = None
    sndbuf: int | None = None
    problems: list[str] = field(default_factory=list)


class TraceFeed:
    """The interface the dashboard uses."""

    info: RunInfo
    store: TraceStore | None = None  # a feed that fills its own store (on its own thread)

    def take(self) -> list[RequestTrace]:
        raise NotImplementedError

    def status(self) -> FeedStatus:
        raise NotImplementedError


class RecordingFeed(TraceFeed):
    def __init__(self, info: RunInfo, traces: Iterable[RequestTrace], status: FeedStatus) -> None:
        self.info = info
        self._traces = list(traces)
        self._status = status
        self._status.ended = True

    def take(self) -> list[RequestTrace]:
        traces, self._traces = self._traces, []
        return traces

    def status(self) -> FeedStatus:
        return self._status


class LiveFeed(TraceFeed):
    """Filled from another thread with `put()`, into `store` (which the UI reads).

    `put()` is called for every small batch the pipeline emits (every ~20 ms); the store
    lists an interval once the next-but-one has begun, or (`take()`, from the UI) when no
    batch came for `quiet_s`.
    """

    def __init__(
        self,
        info: RunInfo,
        status_probe: Callable[[], FeedStatus] | None = None,
        store: TraceStore | None = None,
        quiet_s: float = 0.25,
    ) -> None:
        self.info = info
        self.quiet_s = quiet_s  # the UI lists open intervals after this long (tests: 0)
        self.live_store = store if store is not None else TraceStore()
        self.store = self.live_store
        self._status_probe = status_probe or FeedStatus
        self._put_at = time.monotonic()

    def set_status_probe(self, probe: Callable[[], FeedStatus]) -> None:
        """Where status() gets its numbers (set once, before the UI starts)."""
        self._status_probe = probe

    def put(self, traces: Iterable[RequestTrace]) -> None:
        batch = traces if isinstance(traces, list) else list(traces)
        with self.live_store.lock:
            self.live_store.add(batch)
        self._put_at = time.monotonic()

    def take(self) -> list[RequestTrace]:
        """Nothing to hand over (everything went into the store); on a quiet server, list the
        intervals still open, so that the last requests show."""
        if time.monotonic() - self._put_at >= self.quiet_s:
            with self.live_store.lock:
                self.live_store.close_intervals()
        return []

    def status(self) -> FeedStatus:
        return self._status_probe()
