"""Where the dashboard's traces come from: a live run, or a recording on disk.

The dashboard only ever calls `take()` (new traces since the last call) and `status()`
from its UI timer; both feeds answer instantly. The live feed is filled by the tracer's
pipeline thread through a bounded queue: if the UI falls behind, the oldest traces waiting
to be shown are dropped and counted (the recording on disk still has them all).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class FeedStatus:
    lost_records: int = 0
    dropped_for_display: int = 0
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
    """Filled from another thread with `put()`; drained by the UI with `take()`."""

    def __init__(
        self,
        info: RunInfo,
        status_probe: Callable[[], FeedStatus] | None = None,
        capacity: int = 50_000,
    ) -> None:
        self.info = info
        self._queue: deque[RequestTrace] = deque()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._dropped = 0
        self._status_probe = status_probe or FeedStatus

    def set_status_probe(self, probe: Callable[[], FeedStatus]) -> None:
        """Where status() gets its numbers (set once, before the UI starts)."""
        self._status_probe = probe

    def put(self, traces: Iterable[RequestTrace]) -> None:
        with self._lock:
            for trace in traces:
                if len(self._queue) >= self._capacity:
                    self._queue.popleft()
                    self._dropped += 1
                self._queue.append(trace)

    def take(self) -> list[RequestTrace]:
        with self._lock:
            traces = list(self._queue)
            self._queue.clear()
        return traces

    def status(self) -> FeedStatus:
        status = self._status_probe()
        status.dropped_for_display = self._dropped
        return status
