"""What the dashboard may see of a running `reqtrace run`: a small, read-only view.

The dashboard (dashboards/live.py) never touches a RunSession's internals (its child
process, pipeline, listener or options): it is handed a `SessionView`, which answers a few
questions and accepts one request, to stop. That keeps the dependency one-way (the
dashboard knows the view; the session knows neither) and the dashboard testable with any
object of this shape. `reqtrace attach` has its own view of the same shape, AttachView.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from tracer.session.attach_session import AttachSession
from tracer.session.listener import buffer_sizes
from tracer.session.run_session import RunSession

SessionT = TypeVar("SessionT", RunSession, AttachSession)


class _TracingView(Generic[SessionT]):
    """What every tracing session answers alike."""

    __slots__ = ("_session",)
    _session: SessionT

    def __init__(self, session: SessionT) -> None:
        self._session = session

    # -- facts fixed once tracing has started ---------------------------------------------

    @property
    def coverage(self) -> dict[str, str]:
        plan = self._session.plan
        return dict(plan.coverage()) if plan is not None else {}

    @property
    def clock_offset_ns(self) -> int:
        return self._session.clock_offset_ns

    @property
    def recording_path(self) -> str:
        return self._session.options.record or ""

    @property
    def duration(self) -> float | None:
        return self._session.options.duration

    @property
    def max_requests(self) -> int | None:
        return self._session.options.max_requests

    def recording_header(self) -> dict[str, Any]:
        return self._session.recording_header()

    # -- live figures ---------------------------------------------------------------------

    def traces_done(self) -> int:
        pipeline = self._session.pipeline
        return pipeline.counters.traces if pipeline is not None else 0

    def lost_records(self) -> int:
        pipeline = self._session.pipeline
        return pipeline.counters.lost_records if pipeline is not None else 0

    def otlp_dropped(self) -> int | None:
        """Requests the OTLP exporter dropped (None: no --otlp-endpoint)."""
        return self._session.outputs.otlp_dropped

    def stop_reason(self) -> str:
        """Why tracing is ending ("" while it goes on; "stopped" when asked to stop)."""
        return self._session.should_stop()

    # -- the one request ------------------------------------------------------------------

    def request_stop(self) -> None:
        self._session.stop.set()


class SessionView(_TracingView[RunSession]):
    """Read-only facts of a prepared, started RunSession, plus `request_stop()`."""

    __slots__ = ()

    @property
    def app(self) -> str:
        return str(self._session.config.app)

    @property
    def address(self) -> str:
        return self._session.url

    @property
    def server_pid(self) -> int:
        child = self._session.child
        return child.pid if child is not None else 0

    @property
    def runs_as(self) -> str:
        account = self._session.account
        return account.name if account is not None else ""

    def server_running_pid(self) -> int:
        """The server child's pid while it runs, else 0."""
        child = self._session.child
        return child.pid if child is not None and child.poll() is None else 0

    def listener_buffer_sizes(self) -> tuple[int | None, int | None]:
        listener = self._session.listener
        return buffer_sizes(listener) if listener is not None else (None, None)


class AttachView(_TracingView[AttachSession]):
    """The same read-only face for `reqtrace attach` (dashboards/live.py's RunView)."""

    __slots__ = ()

    @property
    def app(self) -> str:
        return self._session.server

    @property
    def address(self) -> str:
        return ", ".join(self._session.addresses)

    @property
    def server_pid(self) -> int:
        return self._session.options.pid

    @property
    def runs_as(self) -> str:
        tree = self._session.tree
        return tree.user if tree is not None else ""

    def server_running_pid(self) -> int:
        tree = self._session.tree
        return tree.pid if tree is not None and tree.alive() else 0

    def listener_buffer_sizes(self) -> tuple[int | None, int | None]:
        return None, None  # the server's own socket: not ours to look at
