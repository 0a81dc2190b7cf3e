"""`reqtrace run APP`: serve an app in a child process and trace every request it handles.

Order of operations (each step only when the previous one worked):

1. Check we can trace (root, BCC, tracefs, headers) and resolve whom the app runs as.
2. Bind the listening socket here: the port is known before any traffic can arrive.
3. Try the attach strategies (the probe plan) and load the probes, still inert.
4. Start the server child with the socket, the hook pipe and a control pipe. It waits.
5. Write the child's pid and the port into the probe filters and enable them; listen (not
   before: a connection made earlier would have an untraced handshake); then tell the
   child to go. It drops privileges, imports the app and serves.
6. A pipeline thread correlates kernel records and server hooks into traces and hands
   them to the sinks: the recording, the dashboard (or the one-line-per-request log).
7. On Ctrl-C / SIGTERM / --duration / --max-requests / the dashboard's q: stop the child
   gracefully (SIGTERM, then SIGKILL after the grace period), take its last hook records,
   drain the ring buffer, flush the correlator, write the recording's footer, detach the
   probes, restore the terminal. A child that exits by itself is reported with its status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracer import __version__
from tracer.correlate.correlator import Correlator
from tracer.kernel.attach_plan import ProbePlan, build_plan
from tracer.kernel.attach_trials import AttachTrials
from tracer.kernel.probe_loader import ProbeLoadError, ProbeSession
from tracer.kernel.system_facts import gather, tracing_blocker
from tracer.model.trace import RequestTrace
from tracer.recording.export import OTLP_PACKAGES_MISSING
from tracer.recording.raw_log import LoggingCorrelator, RawLogWriter
from tracer.recording.reader import Recording
from tracer.recording.writer import Recorder
from tracer.server.config import Config
from tracer.server.hook_channel import HookChannelReader
from tracer.session.listener import (
    ListenError,
    listener_port,
    listener_url,
    open_listener,
    start_listening,
)
from tracer.session.pipeline import Pipeline, TraceSink
from tracer.session.privileges import Account, PrivilegeError, resolve_account
from tracer.session.request_log import RequestLog

if TYPE_CHECKING:
    from tracer.session.otlp_sink import OtlpSink

EXIT_CANNOT_TRACE = 2


class RunError(RuntimeError):
    """Something stops the run before it starts; the message is one sentence."""


@dataclass
class RunOptions:
    record: str | None = None
    record_raw: str | None = None
    no_tui: bool = False
    duration: float | None = None
    max_requests: int | None = None
    user: str | None = None
    slower_than_ms: float | None = None
    redact: bool = True
    demo_load: list[str] | None = None  # argv of a load generator to start with the server
    otlp_endpoint: str | None = None  # OTLP/HTTP traces URL (session/otlp_sink.py)
    otlp_service_name: str | None = None
    otlp_resource: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    requests: int = 0
    recorded: int = 0
    skipped_fast: int = 0
    lost_records: dict[str, int] = field(default_factory=dict)
    child_status: int | None = None
    child_exited_by_itself: bool = False
    server_log: str = ""
    otlp_exported: int | None = None  # requests sent as OTLP spans (None: no --otlp-endpoint)
    otlp_dropped: int | None = None


class RecordingSink:
    """Writes traces to the recording; with --slower-than, only slow ones (the rest counted)."""

    def __init__(self, recorder: Recorder, slower_than_ms: float | None) -> None:
        self.recorder = recorder
        self.threshold_ns = None if slower_than_ms is None else slower_than_ms * 1e6
        self.skipped = 0

    def __call__(self, traces: list[RequestTrace]) -> None:
        threshold = self.threshold_ns
        if threshold is None:
            self.recorder.write_many(traces)
            return
        slow = [trace for trace in traces if trace.total_ns >= threshold]
        self.skipped += len(traces) - len(slow)
        self.recorder.write_many(slow)


class Tail:
    """Keeps the last traces for the final report of a --no-tui run (bounded: ~3 KiB a
    trace, so 100,000 held 300 MiB in a long run; the report covers the last TAIL_SIZE)."""

    def __init__(self, size: int = 20_000) -> None:
        self.traces: deque[RequestTrace] = deque(maxlen=size)

    def __call__(self, traces: list[RequestTrace]) -> None:
        self.traces.extend(traces)


class RunSession:
    def __init__(self, config: Config, options: RunOptions, argv: list[str] | None = None) -> None:
        self.config = config
        self.options = options
        self.argv = argv or sys.argv
        self.result = RunResult()
        self.stop = threading.Event()
        self.clock_offset_ns = time.time_ns() - time.monotonic_ns()
        self.account: Account | None = None
        self.listener: socket.socket | None = None
        self.plan: ProbePlan | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.load: subprocess.Popen[bytes] | None = None
        self.pipeline: Pipeline | None = None
        self.recording_sink: RecordingSink | None = None
        self.tail = Tail()
        self.extra_sinks: list[TraceSink] = []  # e.g. the dashboard's live feed
        self.otlp: OtlpSink | None = None  # with --otlp-endpoint; its counters are live
        self._server_log_fd: int | None = None

    # -- 1-3: before the server exists --------------------------------------------------

    def prepare(self) -> None:
        self._check_otlp()
        facts = gather()
        blocker = tracing_blocker(facts)
        if blocker:
            raise RunError(blocker)
        try:
            self.account = resolve_account(self.options.user)
        except PrivilegeError as exc:
            raise RunError(str(exc)) from None
        try:
            self.listener = open_listener(self.config)
        except ListenError as exc:
            raise RunError(str(exc)) from None
        with AttachTrials(facts) as trials:
            self.plan = build_plan(trials)
        if not self.plan.can_trace:
            missing = ", ".join(e.point.name for e in self.plan.missing_required)
            raise RunError(
                f"required probe points cannot attach here ({missing}); see reqtrace doctor"
            )

    def _check_otlp(self) -> None:
        endpoint = self.options.otlp_endpoint
        if endpoint is None:
            return
        if not endpoint.startswith(("http://", "https://")):
            raise RunError(f"--otlp-endpoint must be an http:// or https:// URL, not {endpoint!r}")
        try:
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        except ImportError:
            raise RunError(OTLP_PACKAGES_MISSING) from None

    def _start_otlp(self) -> None:
        """The OTLP sink (session/otlp_sink.py), once the server's pid is known."""
        if self.options.otlp_endpoint is None:
            return
        from tracer.session.otlp_sink import OtlpSink

        self.otlp = OtlpSink(
            self.options.otlp_endpoint,
            self.recording_header(),
            self.clock_offset_ns,
            self.options.otlp_service_name,
            self.options.otlp_resource,
            warn=(lambda line: print(line, file=sys.stderr)) if self.options.no_tui else None,
        )
        self.otlp.start()

    def _close_otlp(self) -> dict[str, int]:
        """Flush and stop the OTLP sink; its counters for the footer ({} without one)."""
        if self.otlp is None:
            return {}
        self.otlp.close()
        self.result.otlp_exported = self.otlp.exported
        self.result.otlp_dropped = self.otlp.dropped
        return self.otlp.counters()

    @property
    def port(self) -> int:
        assert self.listener is not None
        return listener_port(self.listener)

    @property
    def url(self) -> str:
        assert self.listener is not None
        return listener_url(self.listener)

    def recording_header(self) -> dict[str, Any]:
        assert self.plan is not None and self.account is not None
        return {
            "reqtrace_version": __version__,
            "host": platform.node(),
            "kernel": platform.release(),
            "app": str(self.config.app),
            "address": self.url,
            "server_pid": self.child.pid if self.child else 0,
            "runs_as": self.account.name,
            "started_unix_ns": time.time_ns(),
            "clock_offset_ns": self.clock_offset_ns,
            "probe_plan": self.plan.as_json(),
            "coverage": self.plan.coverage(),
            "command": self.argv,
        }

    # -- 4-5: the server child ----------------------------------------------------------

    def start_server(self, probes: ProbeSession) -> HookChannelReader:
        assert self.listener is not None and self.account is not None
        hook_read, hook_write = os.pipe()
        control_read, control_write = os.pipe()
        os.set_inheritable(hook_write, True)
        os.set_inheritable(control_read, True)
        child_config = dataclasses.replace(
            self.config,
            fd=self.listener.fileno(),
            hook_fd=hook_write,
            hook_capture_headers=True,
        )
        fields = {f.name: getattr(child_config, f.name) for f in dataclasses.fields(child_config)}
        argv = [
            sys.executable,
            "-m",
            "tracer.session.server_child",
            "--config",
            json.dumps(fields),
            "--control-fd",
            str(control_read),
        ]
        if not self.account.is_root:
            argv += ["--run-as", self.account.spec()]
        stdout, stderr = self._server_output()
        self.child = subprocess.Popen(
            argv,
            pass_fds=(self.listener.fileno(), hook_write, control_read),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # Ctrl-C goes to us; we stop the server gracefully
        )
        os.close(hook_write)
        os.close(control_read)
        probes.set_targets(tgids={self.child.pid}, ports={self.port} if self.port else ())
        try:  # only now: every connection is traced from its handshake on
            start_listening(self.listener, self.config)
        except ListenError as exc:
            os.close(control_write)  # the child sees EOF and exits without serving
            raise RunError(str(exc)) from None
        os.write(control_write, b"G")
        os.close(control_write)
        return HookChannelReader(hook_read)

    def _check_startup(self, seconds: float = 1.0) -> None:
        """Catch a server that dies while starting (app import error, lifespan failure)."""
        assert self.child is not None
        try:
            status = self.child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return
        tail = server_log_tail(self.result.server_log)
        detail = f":\n{tail}" if tail else " (its output is above)"
        raise RunError(f"the server exited at startup with status {status}{detail}")

    def _server_output(self) -> tuple[Any, Any]:
        """--no-tui: the server's logs go to our terminal; with the dashboard, to a file."""
        if self.options.no_tui:
            return None, None
        fd, path = tempfile.mkstemp(prefix="reqtrace-server-", suffix=".log")
        if self.account is not None and not self.account.is_root:
            os.fchown(fd, self.account.uid, self.account.gid)
        self._server_log_fd = fd
        self.result.server_log = path
        return fd, subprocess.STDOUT

    def start_load(self) -> None:
        if self.options.demo_load:
            self.load = subprocess.Popen(
                self.options.demo_load,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

    # -- 7: stopping -------------------------------------------------------------------

    def stop_server(self) -> None:
        grace_of_server = self.config.timeout_graceful_shutdown + 2
        for process, grace in ((self.load, 2.0), (self.child, grace_of_server)):
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.child is not None:
            self.result.child_status = self.child.returncode
        if self._server_log_fd is not None:
            os.close(self._server_log_fd)
            self._server_log_fd = None

    def child_exited(self) -> bool:
        return self.child is not None and self.child.poll() is not None

    def should_stop(self) -> str:
        """Why the run should end now ("" to go on)."""
        if self.stop.is_set():
            return "stopped"
        if self.child_exited():
            self.result.child_exited_by_itself = True
            return f"the server exited with status {self.child.returncode}"  # type: ignore[union-attr]
        if self.pipeline and self.pipeline.error:
            return f"the tracer's pipeline failed: {self.pipeline.error}"
        limit = self.options.max_requests
        if limit and self.pipeline and self.pipeline.counters.traces >= limit:
            return f"{limit} requests traced"
        return ""

    # -- the whole run -----------------------------------------------------------------

    def run(self, wait: Callable[[RunSession], None]) -> RunResult:
        """Steps 3-7; `wait` runs the dashboard or the headless loop until it is time to stop."""
        assert self.plan is not None
        with contextlib.ExitStack() as stack:
            try:
                probes = stack.enter_context(ProbeSession(self.plan))
            except ProbeLoadError as exc:
                raise RunError(str(exc)) from None
            if self.stop.is_set():  # stopped while the probes compiled: never start the server
                return self.result
            correlator: Any = Correlator()
            if self.options.record_raw:
                writer = stack.enter_context(RawLogWriter(self.options.record_raw))
                correlator = LoggingCorrelator(correlator, writer)
            hooks = self.start_server(probes)
            stack.callback(self.stop_server)
            self._start_otlp()
            stack.callback(self._close_otlp)
            recorder = None
            if self.options.record:
                header = self.recording_header()  # names the server's pid
                recorder = Recorder(self.options.record, header, self.options.redact)
                self.recording_sink = RecordingSink(recorder, self.options.slower_than_ms)
            # The pipeline runs from the first instant: records must not pile up while the
            # server starts (a batch spanning seconds strains the reorder window).
            self.pipeline = Pipeline(correlator, probes, hooks, self._sinks())
            pipeline_stop = threading.Event()
            thread = threading.Thread(
                target=self.pipeline.run,
                args=(pipeline_stop,),
                name="reqtrace-pipeline",
                daemon=True,
            )
            thread.start()
            try:
                self._check_startup()
                self.start_load()
                wait(self)
            finally:
                self.stop_server()
                pipeline_stop.set()
                thread.join(timeout=10)
                self.pipeline.finish(hooks_done=self.child_exited)
                hooks.close()
                self.result.requests = self.pipeline.counters.traces
                self.result.lost_records = dict(self.pipeline.counters.lost_by_type)
                otlp_counters = self._close_otlp()
                if recorder is not None:
                    assert self.recording_sink is not None
                    self.result.recorded = recorder.requests
                    self.result.skipped_fast = self.recording_sink.skipped
                    recorder.close(
                        lost_records=self.result.lost_records,
                        extra={
                            "skipped_faster_than_ms": self.options.slower_than_ms,
                            "skipped": self.recording_sink.skipped,
                            "server_exit_status": self.result.child_status,
                            "hook_records_dropped": hooks.dropped,
                            "correlator": correlator.stats.as_dict(),
                            **otlp_counters,
                        },
                    )
        return self.result

    def _sinks(self) -> list[TraceSink]:
        sinks: list[TraceSink] = []
        if self.recording_sink is not None:
            sinks.append(self.recording_sink)
        if self.options.no_tui:  # only a headless run prints the final report from the tail
            sinks.append(self.tail)
            sinks.append(RequestLog(self.clock_offset_ns))
        if self.otlp is not None:
            sinks.append(self.otlp)
        return [*sinks, *self.extra_sinks]

    def final_recording(self) -> Recording:
        """What the run saw, as a Recording for the final report."""
        footer = {"requests": self.result.requests, "lost_records": self.result.lost_records}
        return Recording(None, list(self.tail.traces), footer, [], self.options.record or "")


def server_log_tail(path: str, lines: int = 20) -> str:
    if not path:
        return ""
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""
