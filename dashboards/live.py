"""The dashboard during `reqtrace run` / `reqtrace demo`: wiring a RunSession to the app."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from typing import TYPE_CHECKING, Any

from dashboards.app import ReqtraceApp
from dashboards.feed import FeedStatus, LiveFeed, RunInfo
from tracer.session.listener import buffer_sizes

if TYPE_CHECKING:
    from tracer.session.run_session import RunSession


class ServerStatus:
    """What the header shows about the server process, refreshed at most once a second."""

    def __init__(self, session: RunSession) -> None:
        self.session = session
        self._cached = FeedStatus()
        self._at = 0.0
        self._process: Any = None  # psutil.Process once the child is known

    def __call__(self) -> FeedStatus:
        session = self.session
        status = self._cached
        pipeline = session.pipeline
        if pipeline is not None:
            status.lost_records = pipeline.counters.lost_records
        reason = session.should_stop()
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

        child = self.session.child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(psutil.Error, OSError):
            if self._process is None:
                self._process = psutil.Process(child.pid)
            process = self._process
            status.open_fds = process.num_fds()
            status.fd_limit = process.rlimit(resource.RLIMIT_NOFILE)[0]
        if self.session.listener is not None:
            status.rcvbuf, status.sndbuf = buffer_sizes(self.session.listener)


class LiveApp(ReqtraceApp):
    """The dashboard of a running trace: stops itself when the run has to end."""

    def __init__(self, feed: LiveFeed, session: RunSession) -> None:
        super().__init__(feed)
        self.session = session
        self.deadline = (
            time.monotonic() + session.options.duration if session.options.duration else None
        )

    def on_mount(self) -> None:
        super().on_mount()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop_requested)
        self.set_interval(0.25, self._check_limits)

    def _stop_requested(self) -> None:
        self.session.stop.set()
        self.exit()

    def _check_limits(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.exit()
        options, pipeline = self.session.options, self.session.pipeline
        if options.max_requests and pipeline and pipeline.counters.traces >= options.max_requests:
            self.exit()


def new_live_feed(title: str) -> LiveFeed:
    return LiveFeed(RunInfo(title=title))


def run_dashboard(session: RunSession, feed: LiveFeed) -> None:
    """The `wait` of RunSession.run with the dashboard: returns when the user quits."""
    assert session.account is not None and session.plan is not None
    feed.info.address = session.url
    feed.info.server_pid = session.child.pid if session.child else 0
    feed.info.runs_as = session.account.name
    feed.info.coverage = session.plan.coverage()
    feed.info.clock_offset_ns = session.clock_offset_ns
    feed.info.recording_path = session.options.record or ""
    feed.info.header = session.recording_header()
    feed.set_status_probe(ServerStatus(session))
    # The app's event loop takes SIGTERM/SIGHUP while it runs and leaves them at the default
    # action when it closes: put the run's stop handlers back for the shutdown that follows.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        LiveApp(feed, session).run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
