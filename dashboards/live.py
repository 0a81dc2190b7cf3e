"""The dashboard during `reqtrace run` / `reqtrace demo`: a run's read-only view to the app.

It sees the run only through tracer/session/view.py's SessionView (facts, live counters,
and one request: stop), never the session's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from typing import Any, Protocol

from dashboards.app import ReqtraceApp
from dashboards.feed import FeedStatus, LiveFeed, RunInfo


class RunView(Protocol):
    """What the dashboard asks of a live trace: tracer/session/view.py's SessionView
    (`reqtrace run`) and AttachView (`reqtrace attach`)."""

    @property
    def address(self) -> str: ...
    @property
    def server_pid(self) -> int: ...
    @property
    def runs_as(self) -> str: ...
    @property
    def coverage(self) -> dict[str, str]: ...
    @property
    def clock_offset_ns(self) -> int: ...
    @property
    def recording_path(self) -> str: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def max_requests(self) -> int | None: ...
    def recording_header(self) -> dict[str, Any]: ...
    def traces_done(self) -> int: ...
    def lost_records(self) -> int: ...
    def stop_reason(self) -> str: ...
    def server_running_pid(self) -> int: ...
    def listener_buffer_sizes(self) -> tuple[int | None, int | None]: ...
    def request_stop(self) -> None: ...


class ServerStatus:
    """What the header shows about the server process, refreshed at most once a second."""

    def __init__(self, session: RunView) -> None:
        self.session = session
        self._cached = FeedStatus()
        self._at = 0.0
        self._process: Any = None  # psutil.Process once the child is known

    def __call__(self) -> FeedStatus:
        session = self.session
        status = self._cached
        status.lost_records = session.lost_records()
        reason = session.stop_reason()
        if reason and reason != "stopped":
            status.ended = True
            status.message = reason
        now = time.monotonic()
        if now - self._at >= 1.0:
            self._at = now
            self._sample(status)
        return FeedStatus(**vars(status))

    def _sample(self, status: FeedStatus) -> None:
        import psutil

        pid = self.session.server_running_pid()
        if not pid:
            return
        with contextlib.suppress(psutil.Error, OSError):
            if self._process is None:
                self._process = psutil.Process(pid)
            process = self._process
            status.open_fds = process.num_fds()
            status.fd_limit = process.rlimit(resource.RLIMIT_NOFILE)[0]
        status.rcvbuf, status.sndbuf = self.session.listener_buffer_sizes()


class LiveApp(ReqtraceApp):
    """The dashboard of a running trace: stops itself when the run has to end."""

    def __init__(self, feed: LiveFeed, session: RunView) -> None:
        super().__init__(feed)
        self.session = session
        self.deadline = time.monotonic() + session.duration if session.duration else None

    def on_mount(self) -> None:
        super().on_mount()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop_requested)
        self.set_interval(0.25, self._check_limits)

    def _stop_requested(self) -> None:
        self.session.request_stop()
        self.exit()

    def _check_limits(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.exit()
        limit = self.session.max_requests
        if limit and self.session.traces_done() >= limit:
            self.exit()


def new_live_feed(title: str) -> LiveFeed:
    return LiveFeed(RunInfo(title=title))


def run_dashboard(session: RunView, feed: LiveFeed) -> None:
    """The `wait` of a run with the dashboard: returns when the user quits."""
    feed.info.address = session.address
    feed.info.server_pid = session.server_pid
    feed.info.runs_as = session.runs_as
    feed.info.coverage = session.coverage
    feed.info.clock_offset_ns = session.clock_offset_ns
    feed.info.recording_path = session.recording_path
    feed.info.header = session.recording_header()
    feed.info.mode = str(feed.info.header.get("mode", ""))
    feed.info.limits = str(feed.info.header.get("unavailable", ""))
    feed.set_status_probe(ServerStatus(session))
    # The app's event loop takes SIGTERM/SIGHUP while it runs and leaves them at the default
    # action when it closes: put the run's stop handlers back for the shutdown that follows.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        LiveApp(feed, session).run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
