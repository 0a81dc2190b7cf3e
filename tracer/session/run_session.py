"""`reqtrace run APP`: serve an app in a child process and trace every request it handles.

Order of operations (each step only when the previous one worked; each says what it does,
tracer/session/progress.py):

1. Checks that take milliseconds: tracing is possible here (root, BCC, tracefs, headers),
   the account the app runs as, the output paths (--record), the app's interpreter
   (tracer/session/app_python.py), the address (bound here, not listening yet).
2. The server child starts (tracer/session/server_launch.py): as the app's account, under
   the app's interpreter, it imports the app at once and says so. Meanwhile, when the probe
   plan is cached, clang compiles the probes (user space only). An app mistake ends the run
   here, with the message and exit status `reqtrace serve` gives, before anything of ours
   is loaded into the kernel.
3. The probe plan (cached per boot, else attach trials) and the program (cached per kernel
   build, else compiled), loaded and attached, still inert (tracer/session/probe_setup.py).
4. The child's pid and the port go into the probe filters, then the socket listens (not
   before: a connection made earlier would have an untraced handshake), then the go: the
   child runs lifespan startup and serves.
5. A pipeline thread correlates kernel records and server hooks into traces and hands them
   to the sinks: the recording, the dashboard or the one-line-per-request log, OTLP.
6. The stop (Ctrl-C, SIGTERM, --duration, --max-requests, the dashboard's q, the server's
   own exit): the child is told why and stops accepting at once, shutting the listening
   socket down for every holder (ours too), so new clients are refused, never left
   hanging; requests in flight get --timeout-graceful-shutdown; a second Ctrl-C stops the
   wait. Then the last records are drained, the recording's footer written, the probes
   detached. A child that exits by itself is reported with its exit status.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer import __version__
from tracer.kernel.attach_plan import ProbePlan
from tracer.kernel.probe_loader import ProbeLoadError, ProbeSession
from tracer.kernel.system_facts import gather, tracing_blocker
from tracer.recording.reader import Recording
from tracer.server.config import Config
from tracer.server.hook_channel import HookChannelReader
from tracer.session.app_python import (
    NOT_FOUND,
    AppPython,
    AppPythonError,
    choose_app_python,
)
from tracer.session.attach_session import UNAVAILABLE, arm_kernel_only
from tracer.session.hosted_args import HostedServer
from tracer.session.listener import (
    ListenError,
    listener_port,
    listener_url,
    open_listener,
    start_listening,
)
from tracer.session.pipeline import Pipeline, TraceSink
from tracer.session.preflight import PreflightError, check_outputs
from tracer.session.privileges import Account, PrivilegeError, resolve_account
from tracer.session.probe_cache import ProbeCache
from tracer.session.probe_setup import PlanError, RunProbes
from tracer.session.progress import Progress
from tracer.session.server_child import EXIT_APP, EXIT_ENVIRONMENT, EXIT_PARENT_GONE
from tracer.session.server_launch import ServerChild, describe_status
from tracer.session.signals import StopRequest
from tracer.session.trace_outputs import TraceOutputs, TracingResult, otlp_problem
from tracer.session.worker_follower import WORKER_ACK_ENV, WorkerFollower

# Exit statuses of `reqtrace run` and `demo` (the CLI's --help lists them for every command).
EXIT_OK = 0  # the run ended as asked (Ctrl-C, SIGTERM, --duration, --max-requests, q)
EXIT_SERVER = 1  # the app or its server failed (import error, crash); 3: lifespan startup
EXIT_USAGE = 2  # bad command line, or cannot trace here (not root, no BCC, port in use...)
EXIT_INTERRUPTED = 130  # stopped by a signal before the server served
EXIT_CANNOT_TRACE = EXIT_USAGE


class RunError(RuntimeError):
    """The run cannot start or went wrong; the message is one sentence (or the child's own
    output was already shown: `shown`)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, shown: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.shown = shown


@dataclass
class RunOptions:
    record: str | None = None
    record_raw: str | None = None
    force: bool = False  # overwrite existing --record/--record-raw files
    no_tui: bool = False
    duration: float | None = None
    max_requests: int | None = None
    user: str | None = None
    python: str | None = None  # --python: the app's interpreter (else app_python.py's search)
    find_app_python: bool = True  # False: the app runs under reqtrace's interpreter (demo)
    slower_than_ms: float | None = None
    redact: bool = True
    demo_load: list[str] | None = None  # argv of a load generator to start with the server
    otlp_endpoint: str | None = None  # OTLP/HTTP traces URL (session/otlp_sink.py)
    otlp_service_name: str | None = None
    otlp_resource: dict[str, str] = field(default_factory=dict)
    hosted: HostedServer | None = None  # --server uvicorn|gunicorn: the user's own server


@dataclass
class RunResult(TracingResult):
    child_status: int | None = None
    child_exited_by_itself: bool = False
    child_served: bool = False  # the child had begun serving when it ended
    server_log: str = ""


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


class RunSession:
    def __init__(self, config: Config, options: RunOptions, argv: list[str] | None = None) -> None:
        self.config = config
        self.options = options
        self.argv = argv or sys.argv
        self.result = RunResult()
        self.stop = StopRequest()
        self.progress = Progress()
        self.clock_offset_ns = time.time_ns() - time.monotonic_ns()
        self.account: Account | None = None
        self.app_python: AppPython | None = None
        self.listener: socket.socket | None = None
        self.plan: ProbePlan | None = None
        self.probes: RunProbes | None = None
        self.child: ServerChild | None = None
        self.load: Any = None  # the demo's load generator (subprocess.Popen)
        self.pipeline: Pipeline | None = None
        self.outputs = TraceOutputs(options, self.clock_offset_ns)
        self.extra_sinks: list[TraceSink] = []  # e.g. the dashboard's live feed
        self._port = 0
        self._url = ""
        self._hook_read = -1
        self._server_log_fd: int | None = None
        self._serving_since: float | None = None
        self._stopped = False
        self.workers: WorkerFollower | None = None  # --server gunicorn: follows the workers
        self.server_description = "reqtrace"  # or e.g. "uvicorn 0.55.0 (httptools)"
        self.kernel_only = False  # a server reqtrace cannot hook: traced from the kernel only

    # -- 1-2: checks, and the app imported by the server child ----------------------------------

    def prepare(self) -> None:
        """Everything that can fail fast, then the app's import; RunError says what failed."""
        say = self.progress.say
        options = self.options
        problem = otlp_problem(options.otlp_endpoint)
        if problem:
            raise RunError(problem)
        facts = gather()
        blocker = tracing_blocker(facts)
        if blocker:
            raise RunError(blocker.removeprefix("reqtrace "))
        try:
            self.account = resolve_account(options.user)
            check_outputs(
                [("--record", options.record), ("--record-raw", options.record_raw)],
                options.force,
            )
            self.app_python = self._choose_python()
            self.listener = open_listener(self.config)
        except (PrivilegeError, PreflightError, AppPythonError, ListenError) as exc:
            raise RunError(str(exc)) from None
        self._port, self._url = listener_port(self.listener), listener_url(self.listener)
        self.probes = RunProbes(facts, ProbeCache.open(), say)
        python = self.app_python
        checked = [f"can trace here, the app runs as {self.account.name}"]
        checked += [
            f"{path} can be written" for path in (options.record, options.record_raw) if path
        ]
        checked.append(f"{self._url.removeprefix('http://')} is free")
        say("checked: " + ", ".join(checked))
        hosted = options.hosted
        say(
            f"importing {self.config.app}"
            + ("" if python.own and not options.find_app_python else f" with {python.describe()}")
            + (f" under {hosted.kind}" if hosted else "")
        )
        for note in hosted.notes if hosted else ():
            say(note)
        spawned = time.monotonic()
        self._start_child()
        self.probes.start_compiling()  # user space only: nothing in the kernel yet
        assert self.child is not None
        if not self.child.wait_imported(self.stop):
            if self.stop.is_set():
                raise RunError(
                    f"interrupted ({self.stop.reason}) before the server started",
                    EXIT_INTERRUPTED,
                )
            raise self._child_failed_at_startup()
        facts_of_child = self.child.imported or {}
        self.server_description = str(facts_of_child.get("server") or "reqtrace")
        hosted_server = f", {self.server_description}" if options.hosted else ""
        imported = "app imported"
        if facts_of_child.get("app_imported") is False:  # gunicorn: each worker imports it
            imported = "server ready (its workers import the app)"
        say(
            f"{imported} ({time.monotonic() - spawned:.2f} s with the interpreter's start,"
            f" Python {facts_of_child.get('version', '?')}{hosted_server})"
        )
        if self.child.hooks_off:
            self.kernel_only = True
            say(
                f"{self.child.hooks_off}: tracing from the kernel only, as reqtrace attach"
                " does (one server stage instead of parse, loop_queue, app and handoff)"
            )

    def _choose_python(self) -> AppPython:
        if not self.options.find_app_python:
            return AppPython(sys.executable, "reqtrace's own", True)
        return choose_app_python(self.options.python, os.environ, self.config.app_dir, os.getcwd())

    def _start_child(self) -> None:
        assert self.listener is not None and self.account is not None
        assert self.app_python is not None
        hook_read, hook_write = os.pipe()
        hosted = self.options.hosted
        extra_env = {}
        if hosted is not None and hosted.kind == "gunicorn":
            self.workers = WorkerFollower()
            extra_env[WORKER_ACK_ENV] = self.workers.ack_dir
        try:
            self.child = ServerChild.launch(
                self.config,
                self.account,
                self.app_python,
                hook_fd=hook_write,
                listen_fd=self.listener.fileno(),
                output=self._server_output(),
                server=hosted.kind if hosted else "reqtrace",
                server_args=hosted.argv if hosted else None,
                extra_env=extra_env,
            )
        except OSError as exc:
            os.close(hook_read)
            raise RunError(
                f"cannot start the server with {self.app_python.executable}: {exc.strerror or exc}"
            ) from None
        finally:
            os.close(hook_write)
        self._hook_read = hook_read

    def _child_failed_at_startup(self) -> RunError:
        """The child ended before serving: its own words are the message (as `serve`)."""
        assert self.child is not None
        status = self.child.wait_exit(5.0)
        if status is None:
            self.child.kill()
            status = self.child.exit_status()
        self.result.child_status = status
        tail = server_log_tail(self.result.server_log, lines=40)
        if tail:  # with the dashboard the child's output went to a file: show it now
            print(tail, file=sys.stderr)
        code = status if status in (EXIT_APP, 3) else EXIT_SERVER
        if status == EXIT_ENVIRONMENT:
            code = EXIT_USAGE
        if status == EXIT_PARENT_GONE:
            return RunError("the server gave up: the tracer stopped talking to it", EXIT_SERVER)
        python = self.app_python
        self.child.wait_status_closed(1.0)
        if self.child.missing_module and python is not None and python.why == NOT_FOUND:
            return RunError(
                f"{self.child.missing_module} is not installed for reqtrace's own Python, which"
                " ran the app because no virtualenv was found: if the app's packages live in"
                " one, run from its folder or give it with --python PATH",
                EXIT_APP,
            )
        return RunError(
            f"the server exited before serving ({describe_status(status or 0)})",
            code or EXIT_SERVER,
            shown=True,
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return self._url

    def recording_header(self) -> dict[str, Any]:
        assert self.plan is not None and self.account is not None
        return {
            "reqtrace_version": __version__,
            "host": platform.node(),
            "kernel": platform.release(),
            "mode": "run",  # `reqtrace attach` writes "attach"
            "server": self.options.hosted.kind if self.options.hosted else "reqtrace",
            "app": str(self.config.app),
            "address": self.url,
            "server_pid": self.child.pid if self.child else 0,
            "runs_as": self.account.name,
            "app_python": self.app_python.executable if self.app_python else "",
            "started_unix_ns": time.time_ns(),
            "clock_offset_ns": self.clock_offset_ns,
            "probe_plan": self.plan.as_json(),
            "coverage": self.plan.coverage(),
            "command": self.argv,
            **({"unavailable": UNAVAILABLE} if self.kernel_only else {}),
        }

    def _server_output(self) -> tuple[Any, Any]:
        """--no-tui: the server's logs go to our terminal; with the dashboard, to a file."""
        if self.options.no_tui:
            return None, None
        fd, path = tempfile.mkstemp(prefix="reqtrace-server-", suffix=".log")
        if self.account is not None and not self.account.is_root:
            os.fchown(fd, self.account.uid, self.account.gid)
        self._server_log_fd = fd
        self.result.server_log = path
        return fd, fd

    # -- 3-4: probes, filters, the go ------------------------------------------------------

    def _load_probes(self) -> ProbeSession:
        assert self.probes is not None
        try:
            self.plan = self.probes.make_plan()
            return self.probes.load(self.stop)
        except (PlanError, ProbeLoadError) as exc:
            if self.stop.is_set():
                raise RunError(
                    f"interrupted ({self.stop.reason}) before the server started",
                    EXIT_INTERRUPTED,
                ) from None
            raise RunError(str(exc)) from None

    def _arm_and_go(self, probes: ProbeSession) -> HookChannelReader:
        assert self.listener is not None and self.child is not None
        ports = {self.port} if self.port else set()
        if self.kernel_only:  # requests told apart in the kernel, as attach does
            arm_kernel_only(probes, [self.child.pid], sorted(ports))
        else:
            probes.set_targets(tgids={self.child.pid}, ports=ports)
        try:  # only now: every connection is traced from its handshake on
            start_listening(self.listener, self.config)
        except ListenError as exc:
            raise RunError(str(exc)) from None
        if self.workers is not None:  # gunicorn forks its workers after the go
            self.workers.start(probes, self.child.pid, ports, capture_heads=self.kernel_only)
        self.child.go()
        hooks = HookChannelReader(self._hook_read)
        self._hook_read = -1
        return hooks

    def _wait_serving(self) -> None:
        assert self.child is not None
        if self.child.wait_serving(self.stop):
            self._serving_since = time.monotonic()
            runs_as = self.account.name if self.account else "?"
            self.progress.say(
                f"serving {self.url} as {runs_as}, every request traced"
                f" ({self.progress.elapsed():.1f} s since start); Ctrl-C stops"
            )
            return
        if self.stop.is_set():
            return
        raise self._child_failed_at_startup()

    def start_load(self) -> None:
        if self.options.demo_load:
            import subprocess

            self.load = subprocess.Popen(
                self.options.demo_load,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

    # -- 6: stopping -----------------------------------------------------------------------

    def child_exited(self) -> bool:
        return self.child is not None and self.child.exit_status() is not None

    def should_stop(self) -> str:
        """Why the run should end now ("" to go on; "stopped" when asked to stop)."""
        if self.stop.is_set():
            return "stopped"
        if self.child_exited():
            assert self.child is not None
            self.result.child_exited_by_itself = True
            status = self.child.exit_status() or 0
            return self._child_exit_message(status)
        if self.pipeline and self.pipeline.error:
            return f"the tracer's pipeline failed: {self.pipeline.error}"
        limit = self.options.max_requests
        if limit and self.pipeline and self.pipeline.counters.traces >= limit:
            return f"--max-requests {limit} reached: {plural(limit, 'request')} traced"
        duration, since = self.options.duration, self._serving_since
        if duration and since is not None and time.monotonic() - since >= duration:
            return f"--duration {duration:g} s reached"
        return ""

    def _child_exit_message(self, status: int) -> str:
        assert self.child is not None
        served = self.pipeline.counters.traces if self.pipeline else 0
        what = describe_status(status)
        if self.child.served_before_exit:
            verb = "was" if status < 0 else "exited with"
            return (
                f"the server (pid {self.child.pid}) {verb} {what}"
                f" after serving {plural(served, 'traced request')}"
            )
        return f"the server (pid {self.child.pid}) exited before serving ({what})"

    def _stop_reason(self) -> str:
        if self.stop.reason and self.stop.reason != StopRequest.DEFAULT_REASON:
            return self.stop.reason
        reason = self.should_stop()
        if reason and reason != "stopped":
            return reason
        return self.stop.reason or "the dashboard was closed (q or Ctrl-C)"

    def stop_server(self) -> None:
        """Tell the child why it stops; make sure nobody accepts any more; drain; reap."""
        if self._stopped:
            return
        self._stopped = True
        say = self.progress.say
        load, self.load = self.load, None
        if load is not None and load.poll() is None:
            load.terminate()
            with contextlib.suppress(Exception):
                load.wait(timeout=2)
        child = self.child
        if child is None:
            self._close_listener()
            return
        reason = self._stop_reason()
        self.result.stop_reason = reason
        if child.exit_status() is None:
            say(f"stopping: {reason}")
            child.request_stop(reason)
            if not child.wait_stopped_accepting(1.0):
                # The server's loop is busy (or gone): shut the socket ourselves.
                self._shut_listener()
        self._close_listener()
        if child.exit_status() is None:
            left = child.stopping_connections or 0
            grace = self.config.timeout_graceful_shutdown
            if left:
                say(
                    f"the server stopped accepting; {plural(left, 'connection')} finishing"
                    f" (up to {grace:g} s; Ctrl-C again to stop waiting)"
                )
            self._wait_child_exit(grace + 2.0)
        self.result.child_status = child.exit_status()
        self.result.child_served = child.served_before_exit
        child.wait_status_closed(1.0)
        if self._server_log_fd is not None:
            os.close(self._server_log_fd)
            self._server_log_fd = None

    def _wait_child_exit(self, grace: float) -> None:
        assert self.child is not None
        asked = self.stop.count
        deadline = time.monotonic() + grace
        while self.child.wait_exit(0.1) is None:
            if self.stop.count > asked:  # Ctrl-C again: stop waiting for requests in flight
                asked = self.stop.count
                self.child.force_stop()
            if time.monotonic() >= deadline:
                self.progress.say("the server did not stop in time: killing it")
                self.child.kill()
                return

    def _shut_listener(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RD)

    def _close_listener(self) -> None:
        """Our copy of the listening socket: kept until the stop, never after."""
        if self.listener is not None:
            self.listener.close()

    # -- the whole run ---------------------------------------------------------------------

    def run(self, wait: Callable[[RunSession], None]) -> RunResult:
        """Steps 3-6; `wait` runs the dashboard or the headless loop until it is time to stop."""
        assert self.child is not None
        with contextlib.ExitStack() as stack:
            stack.callback(self._release_child)
            stack.callback(self._stop_following)
            probes = stack.enter_context(self._load_probes())
            stack.callback(self.progress.say, "detaching the probes (a second or two)")
            stack.callback(self.stop_server)  # before the detach, also when a step fails
            if self.stop.is_set():  # stopped while the probes loaded: never serve
                raise RunError(
                    f"interrupted ({self.stop.reason}) before the server started",
                    EXIT_INTERRUPTED,
                )
            assert self.plan is not None
            outputs = self.outputs
            stack.callback(outputs.close, {}, {})  # if a step below fails; closed once
            poll_functions = self.plan.driver_poll_functions()
            correlator = outputs.correlator(self.kernel_only, poll_functions)
            hooks = self._arm_and_go(probes)
            sinks = outputs.open(self.recording_header())  # the header names the server's pid
            # The pipeline runs from the first instant: records must not pile up while the
            # server starts (a batch spanning seconds strains the reorder window).
            self.pipeline = Pipeline(correlator, probes, hooks, [*sinks, *self.extra_sinks])
            pipeline_stop = threading.Event()
            thread = threading.Thread(
                target=self.pipeline.run,
                args=(pipeline_stop,),
                name="reqtrace-pipeline",
                daemon=True,
            )
            thread.start()
            try:
                self._wait_serving()
                if self._serving_since is not None:
                    self.start_load()
                    wait(self)
            finally:
                self.stop_server()
                pipeline_stop.set()
                thread.join(timeout=10)
                self.pipeline.finish(hooks_done=self.child_exited)
                hooks.close()
                outputs.finish(
                    self.pipeline,
                    self.result,
                    {
                        "server_exit_status": self.result.child_status,
                        "hook_records_dropped": hooks.dropped,
                    },
                )
        return self.result

    def abandon(self) -> None:
        """After a failed prepare(): end the child (it has not served) and free everything."""
        if self.child is not None:
            self.child.close()  # before the go: the child sees EOF and exits by itself
            if self.child.wait_exit(2.0) is None:
                self.child.kill()
        self._release_child()
        self._stop_following()
        self._close_listener()

    def _stop_following(self) -> None:
        if self.workers is not None:
            self.workers.stop()

    def _release_child(self) -> None:
        if self.child is not None:
            if self.child.exit_status() is None:
                self.child.close()
                if self.child.wait_exit(2.0) is None:
                    self.child.kill()
            self.child.release()
        if self._hook_read >= 0:
            os.close(self._hook_read)
            self._hook_read = -1
        if self._server_log_fd is not None:
            os.close(self._server_log_fd)
            self._server_log_fd = None

    def final_recording(self) -> Recording:
        """What the run saw, as a Recording for the final report."""
        footer = {"requests": self.result.requests, "lost_records": self.result.lost_records}
        traces = list(self.outputs.tail.traces)
        return Recording(None, traces, footer, [], self.options.record or "")


def server_log_tail(path: str, lines: int = 20) -> str:
    if not path:
        return ""
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""
