"""`reqtrace attach --pid PID`: trace a server that is already running, without touching it.

Order of operations (each says what it does, tracer/session/progress.py):

1. Checks (milliseconds): tracing is possible here; the process exists; its listening TCP
   ports (psutil, or --port) and its children (gunicorn's workers) are found.
2. The probes, as for `reqtrace run` (tracer/session/probe_setup.py: cached plan and
   program), loaded and attached, still inert.
3. The filters: the process and its children, the ports, and RT_CFG_CAPTURE_HEAD (the first
   bytes of each request and the status line of each response are copied in the kernel).
4. A pipeline thread correlates the kernel records alone (tracer/correlate/kernel_only.py)
   and hands traces to the sinks: the recording, the dashboard or the one-line log.
5. Once a second the process tree is looked at again: workers that came or went are put
   in the filters; the target's exit ends the attach (said plainly).
6. The stop (Ctrl-C, SIGTERM, --duration, --max-requests, the dashboard's q, the target's
   exit): the last records are drained, the recording's footer written, every probe
   detached. The target never notices: nothing is started in it, nothing in it changes.

What attach mode cannot see: no hook runs inside the server, so the parse, body, loop
queue, app and handoff stages do not exist; the `server` stage (last read → first send)
holds all of the server's own time. The kernel, epoll and syscall stages are the same as
with `reqtrace run`.

For a server reqtrace starts itself but cannot hook (the kernel-only fallback of `run
--server`): `arm_kernel_only(probes, pids, ports)` arms the probes for the
`KernelOnlyCorrelator`; `UNAVAILABLE` goes in the recording header; `ProcessTree` follows
workers.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracer import __version__
from tracer.correlate.kernel_only import HOOK_STAGES
from tracer.kernel.attach_plan import ProbePlan
from tracer.kernel.probe_loader import ProbeLoadError, ProbeSession
from tracer.kernel.system_facts import gather, tracing_blocker
from tracer.recording.reader import Recording
from tracer.records.kernel import RT_MAX_TARGETS
from tracer.session.pipeline import Pipeline, TraceSink
from tracer.session.preflight import PreflightError, check_outputs
from tracer.session.probe_cache import ProbeCache
from tracer.session.probe_setup import PlanError, RunProbes
from tracer.session.progress import Progress
from tracer.session.signals import StopRequest
from tracer.session.trace_outputs import TraceOutputs, TracingResult, otlp_problem

EXIT_OK = 0
EXIT_USAGE = 2  # bad usage, no such process, cannot trace here
EXIT_INTERRUPTED = 130
WATCH_INTERVAL_S = 1.0

UNAVAILABLE = (
    "no reqtrace hooks in the server: kernel and syscall stages only; "
    f"{HOOK_STAGES.replace(', startup', '')} need them (reqtrace run), the server stage "
    "holds the server's own time"
)


class AttachError(RuntimeError):
    """Attaching cannot start or went wrong; the message is one sentence."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class AttachOptions:
    pid: int
    ports: tuple[int, ...] = ()  # --port; empty: the ports the process listens on
    record: str | None = None
    record_raw: str | None = None
    force: bool = False  # overwrite existing --record/--record-raw files
    no_tui: bool = False
    duration: float | None = None
    max_requests: int | None = None
    slower_than_ms: float | None = None
    redact: bool = True
    otlp_endpoint: str | None = None  # OTLP/HTTP traces URL (session/otlp_sink.py)
    otlp_service_name: str | None = None
    otlp_resource: dict[str, str] = field(default_factory=dict)


@dataclass
class AttachResult(TracingResult):
    target_exited: bool = False


def describe_process(pid: int) -> str:
    """ "pid 123 (uvicorn)": what the recording header and the dashboard call the server."""
    import psutil

    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid}"


class ProcessTree:
    """A process and its descendants (gunicorn's master and workers), seen through psutil."""

    def __init__(self, pid: int) -> None:
        import psutil

        try:
            self.root = psutil.Process(pid)
            self.name = self.root.name()
            self.cmdline = self.root.cmdline()
            self.user = self.root.username()
            if self.root.status() == psutil.STATUS_ZOMBIE:
                raise AttachError(f"pid {pid} ({self.name}) has exited (a zombie)")
        except psutil.NoSuchProcess:
            raise AttachError(f"no process with pid {pid}") from None
        except psutil.AccessDenied:
            raise AttachError(f"pid {pid} cannot be inspected (run as root)") from None
        self.pid = pid

    def alive(self) -> bool:
        import psutil

        try:
            return bool(self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def pids(self) -> list[int]:
        """The process and its live descendants, the process first."""
        import psutil

        with contextlib.suppress(psutil.Error):
            return [self.pid, *sorted(c.pid for c in self.root.children(recursive=True))]
        return [self.pid]

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every TCP socket the processes listen on, sorted, once each."""
        import psutil

        pids = set(self.pids())
        found: set[tuple[str, int]] = set()
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.pid in pids:
                found.add((connection.laddr.ip, connection.laddr.port))
        return sorted(found, key=lambda item: (item[1], item[0]))


def arm_kernel_only(probes: ProbeSession, tgids: list[int], ports: list[int]) -> None:
    """Arm loaded probes for a server without reqtrace's hooks, whose records a
    KernelOnlyCorrelator then reads (in a Pipeline with no hook channel).

    The kernel-only fallback of `reqtrace run --server` uses this as `attach` does: the
    filters with RT_CFG_CAPTURE_HEAD (each request's first bytes and each response's status
    line copied in the kernel), from which the correlator delimits requests. Put
    `UNAVAILABLE` in the recording header's "unavailable" key so that the dashboard and
    `show` say what cannot be seen. Call again when the processes change (workers).
    """
    probes.set_targets(tgids=tgid_filter(tgids), ports=ports, capture_heads=True)


def tgid_filter(pids: list[int]) -> list[int]:
    """The processes to filter on; [] (no process filter, the port filter alone) when there
    are more than the kernel side compares inline."""
    return pids if len(pids) <= RT_MAX_TARGETS else []


class AttachSession:
    def __init__(self, options: AttachOptions, argv: list[str] | None = None) -> None:
        self.options = options
        self.argv = argv or sys.argv
        self.result = AttachResult()
        self.stop = StopRequest()
        self.progress = Progress()
        self.clock_offset_ns = time.time_ns() - time.monotonic_ns()
        self.tree: ProcessTree | None = None
        self.ports: list[int] = []
        self.addresses: list[str] = []
        self.plan: ProbePlan | None = None
        self.probes: RunProbes | None = None
        self.session: ProbeSession | None = None
        self.pipeline: Pipeline | None = None
        self.outputs = TraceOutputs(options, self.clock_offset_ns)
        self.extra_sinks: list[TraceSink] = []
        self.attached_at: float | None = None  # time.monotonic() once the filters are armed
        self._pids: list[int] = []
        self._watch_stop = threading.Event()

    # -- 1: checks ---------------------------------------------------------------------------

    def prepare(self) -> None:
        say = self.progress.say
        options = self.options
        facts = gather()
        blocker = tracing_blocker(facts)
        if blocker:
            raise AttachError(blocker.removeprefix("reqtrace "))
        problem = otlp_problem(options.otlp_endpoint)
        if problem:
            raise AttachError(problem)
        try:
            check_outputs(
                [("--record", options.record), ("--record-raw", options.record_raw)],
                options.force,
            )
        except PreflightError as exc:
            raise AttachError(str(exc)) from None
        self.tree = tree = ProcessTree(options.pid)
        self._pids = tree.pids()
        listening = tree.listening()
        if options.ports:
            self.ports = sorted(set(options.ports))
            self.addresses = [f"port {port}" for port in self.ports]
        else:
            self.ports = sorted({port for _, port in listening})
            self.addresses = [_url(ip, port) for ip, port in listening]
            if not self.ports:
                raise AttachError(
                    f"{self.server} listens on no TCP port (nor do its children): give the"
                    " server's port with --port"
                )
        if len(self.ports) > RT_MAX_TARGETS:
            raise AttachError(
                f"{self.server} listens on {len(self.ports)} ports; reqtrace follows at most"
                f" {RT_MAX_TARGETS}: choose with --port"
            )
        workers = len(self._pids) - 1
        say(
            f"checked: can trace here; {self.server}"
            + (f" and {workers} child process{'es' if workers != 1 else ''}" if workers else "")
            + f" run as {tree.user}, listening on {', '.join(self.addresses)}"
        )
        if not tgid_filter(self._pids):
            say(
                f"{len(self._pids)} processes: more than the {RT_MAX_TARGETS} the probes compare"
                " inline, so only the port filter applies"
            )
        self.probes = RunProbes(facts, ProbeCache.open(), say)
        self.probes.start_compiling()

    @property
    def server(self) -> str:
        tree = self.tree
        return f"pid {self.options.pid} ({tree.name})" if tree else f"pid {self.options.pid}"

    def recording_header(self) -> dict[str, Any]:
        tree = self.tree
        return {
            "reqtrace_version": __version__,
            "host": platform.node(),
            "kernel": platform.release(),
            "mode": "attach",
            "server": self.server,
            "app": " ".join(tree.cmdline) if tree else "",
            "address": ", ".join(self.addresses),
            "server_pid": self.options.pid,
            "runs_as": tree.user if tree else "",
            "ports": self.ports,
            "unavailable": UNAVAILABLE,
            "started_unix_ns": time.time_ns(),
            "clock_offset_ns": self.clock_offset_ns,
            "probe_plan": self.plan.as_json() if self.plan else {},
            "coverage": self.plan.coverage() if self.plan else {},
            "command": self.argv,
        }

    # -- 2-3: probes and filters ---------------------------------------------------------------

    def _load_probes(self) -> ProbeSession:
        assert self.probes is not None
        try:
            self.plan = self.probes.make_plan()
            return self.probes.load(self.stop)
        except (PlanError, ProbeLoadError) as exc:
            if self.stop.is_set():
                raise AttachError(f"interrupted ({self.stop.reason})", EXIT_INTERRUPTED) from None
            raise AttachError(str(exc)) from None

    def _arm(self, probes: ProbeSession) -> None:
        arm_kernel_only(probes, self._pids, self.ports)

    # -- 5: following the process tree ----------------------------------------------------------

    def _watch(self) -> None:
        """Once a second: workers that came or went go into the filters; the target's exit
        stops the attach."""
        tree = self.tree
        assert tree is not None
        while not self._watch_stop.wait(WATCH_INTERVAL_S):
            if not tree.alive():
                self.result.target_exited = True
                self.stop.request(f"the server ({self.server}) exited")
                return
            pids = tree.pids()
            if pids != self._pids and self.session is not None:
                self._pids = pids
                with contextlib.suppress(Exception):  # detached meanwhile: the stop follows
                    self._arm(self.session)

    def should_stop(self) -> str:
        """Why the attach should end now ("" to go on; "stopped" when asked to stop)."""
        if self.stop.is_set():
            return "stopped"
        if self.pipeline and self.pipeline.error:
            return f"the tracer's pipeline failed: {self.pipeline.error}"
        limit = self.options.max_requests
        if limit and self.pipeline and self.pipeline.counters.traces >= limit:
            return f"--max-requests {limit} reached"
        duration, since = self.options.duration, self.attached_at
        if duration and since is not None and time.monotonic() - since >= duration:
            return f"--duration {duration:g} s reached"
        return ""

    # -- the whole attach ------------------------------------------------------------------------

    def run(self, wait: Callable[[AttachSession], None]) -> AttachResult:
        """Steps 2-6; `wait` runs the dashboard or the headless loop until it is time to stop."""
        say = self.progress.say
        with contextlib.ExitStack() as stack:
            probes = stack.enter_context(self._load_probes())
            stack.callback(say, "detached every probe")
            self.session = probes
            if self.stop.is_set():
                raise AttachError(f"interrupted ({self.stop.reason})", EXIT_INTERRUPTED)
            assert self.plan is not None
            outputs = self.outputs
            stack.callback(outputs.close, {}, {})  # if a step below fails; closed once
            correlator = outputs.correlator(True, self.plan.driver_poll_functions())
            self._arm(probes)
            sinks = outputs.open(self.recording_header())
            self.pipeline = Pipeline(correlator, probes, None, [*sinks, *self.extra_sinks])
            pipeline_stop = threading.Event()
            pipeline_thread = threading.Thread(
                target=self.pipeline.run,
                args=(pipeline_stop,),
                name="reqtrace-pipeline",
                daemon=True,
            )
            watcher = threading.Thread(target=self._watch, name="reqtrace-watch", daemon=True)
            pipeline_thread.start()
            watcher.start()
            self.attached_at = time.monotonic()
            say(
                f"attached to {self.server}: every request on {', '.join(map(str, self.ports))}"
                " traced from the kernel (no hooks: no parse/app stages); Ctrl-C stops"
            )
            try:
                wait(self)
            finally:
                self._watch_stop.set()
                reason = self.stop.reason or "the dashboard was closed (q or Ctrl-C)"
                self.result.stop_reason = reason
                say(f"stopping: {reason}; detaching the probes")
                pipeline_stop.set()
                pipeline_thread.join(timeout=10)
                self.pipeline.finish(hooks_done=lambda: True, timeout=0.3)
                watcher.join(timeout=2)
                outputs.finish(
                    self.pipeline, self.result, {"target_exited": self.result.target_exited}
                )
        return self.result

    def final_recording(self) -> Recording:
        footer = {"requests": self.result.requests, "lost_records": self.result.lost_records}
        traces = list(self.outputs.tail.traces)
        return Recording(self.recording_header(), traces, footer, [], self.options.record or "")


def _url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"
