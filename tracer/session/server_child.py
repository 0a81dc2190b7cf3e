"""The server child of `reqtrace run`: import the app as its user, wait for the go, serve.

    APP_PYTHON -m tracer.session.server_child --config JSON --control-fd N --status-fd N
               [--run-as NAME:UID:GID] [--fallback-path DIR]

The tracer (tracer/session/server_launch.py) starts this process already as the app's account
and with the app's own interpreter (the user's virtualenv, as `uvicorn app:app` would run),
at the very start of the run: the app is imported while the probes are prepared, so a
mistake in it is reported before anything compiles. The parent has bound the socket (the
config's `fd`) and opened the hook pipe (`hook_fd`), a control pipe (tracer -> child) and a
status pipe (child -> tracer, one line per milestone).

1. The kernel sends SIGHUP when the tracer dies, even by SIGKILL (PR_SET_PDEATHSIG).
2. The server code needs httptools: from the app's environment, else reqtrace's own copy
   (`--fallback-path`, usable when the interpreters share an ABI), else a clear message.
3. The app is imported inside the event loop, exactly as `reqtrace serve` does; a failure
   is logged as `serve` logs it and the process exits 1. Success: "imported {...}".
4. Wait for "G" (the probes are armed and the socket listens); EOF: the tracer gave up.
   When what is missing is one of the app's own dependencies: "missing-module NAME".
5. Lifespan startup, serve on the inherited socket: "serving".
6. Control lines: "stop REASON" (graceful: logged with its reason), "force" (stop
   waiting for requests in flight); EOF or SIGHUP: the tracer is gone, stop accepting at
   once and exit within half a second.
7. Once the server stops accepting, the listening socket is shut down for every process
   that holds it (the tracer's own copy too): new connections are refused at once instead
   of waiting in a backlog that nobody accepts from. Then "stopping N" (connections left).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from tracer.session.privileges import Account, PrivilegeError, drop_to

EXIT_APP = 1  # the app could not be imported, or the address not served (as `serve`)
EXIT_ENVIRONMENT = 4  # the app's interpreter or account cannot run reqtrace's server
EXIT_PARENT_GONE = 5  # the tracer went away before or while serving
PARENT_GONE_GRACE_S = 0.4  # after the tracer died: the longest the server may take to exit

PR_SET_PDEATHSIG = 1
logger = logging.getLogger("reqtrace.server")


def end_with_parent(parent_pid: int, signum: int = signal.SIGHUP) -> bool:
    """Have the kernel send SIGHUP when the tracer dies (even by SIGKILL).

    SIGHUP (not SIGTERM): the child can tell "the tracer is gone, nobody traces, stop now"
    from a stop request. gunicorn's master reloads on SIGHUP: it gets SIGQUIT (its quick
    stop). False if the parent is already gone.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    return os.getppid() == parent_pid


def httptools_problem(fallback_path: str) -> str:
    """Empty when httptools imports (the app's own, else reqtrace's copy); else what to do."""
    if _imports("httptools"):
        return ""
    if fallback_path:
        sys.path.append(fallback_path)  # last: the app's own packages always win
        if _imports("httptools"):
            return ""
        sys.path.remove(fallback_path)
    return (
        f"reqtrace: the app's environment ({sys.executable}) has no httptools, which "
        f"reqtrace's server needs; install it there: {sys.executable} -m pip install "
        "httptools (uvicorn[standard] includes it)"
    )


def _imports(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


class StatusPipe:
    """The child's side of the status pipe: one line per milestone, never blocking long."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def say(self, line: str) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, (line + "\n").encode())
        except OSError:  # the tracer is gone: nobody listens any more
            self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class ChildRun:
    """The life of the server in this child, driven by the control pipe and SIGHUP.

    `server`: "reqtrace" (the bundled server), "uvicorn" or "gunicorn" (the user's own,
    tracer/hosted/, with `server_args` its own command line)."""

    def __init__(
        self,
        config: Any,
        control_fd: int,
        status: StatusPipe,
        server: str = "reqtrace",
        server_args: list[str] | None = None,
    ) -> None:
        self.control_fd = control_fd
        self.status = status
        self.listen_fd = os.dup(config.fd)  # to shut the socket down for every holder
        self.serving = False
        self.parent_gone = False
        self._gone_lock = threading.Lock()
        self.began = time.monotonic()
        self.server: Any
        if server == "uvicorn":
            from tracer.hosted.uvicorn_server import HostedUvicorn

            self.server = HostedUvicorn(
                server_args or [], config.fd, config.hook_fd, self, config.hook_capture_headers
            )
        elif server == "gunicorn":
            from tracer.hosted.gunicorn_run import HostedGunicorn

            self.server = HostedGunicorn(
                server_args or [], config.fd, config.hook_fd, self, config.hook_capture_headers
            )
        else:
            from tracer.server.main import Server

            self.server = Server(
                config,
                on_started=self._on_started,
                on_app_loaded=self._on_app_loaded,
                on_stop_accepting=self._on_stop_accepting,
            )

    def run(self) -> int:
        code: int = self.server.run(install_signal_handlers=True)
        if self.parent_gone:
            return EXIT_PARENT_GONE
        error = self.server.load_error
        if error is not None and error.missing_module:
            self.status.say(f"missing-module {error.missing_module}")
        return code

    # -- milestones ------------------------------------------------------------------------

    async def _on_app_loaded(self) -> int | None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_parent_gone)
        facts = {
            "python": sys.executable,
            "version": sys.version.split()[0],
            "seconds": round(time.monotonic() - self.began, 3),
        }
        self.status.say("imported " + json.dumps(facts))
        go = await loop.run_in_executor(None, self._read_go)
        if not go:
            self._shut_listener()
            return EXIT_PARENT_GONE
        threading.Thread(target=self._read_control, name="reqtrace-control", daemon=True).start()
        return None

    # -- the milestones of a hosted server (tracer/hosted/uvicorn_server.py's Milestones) ----

    def app_loaded(self) -> int | None:
        """The app is imported (outside any event loop): say so, block until the go."""
        facts = {
            "python": sys.executable,
            "version": sys.version.split()[0],
            "seconds": round(time.monotonic() - self.began, 3),
            "server": getattr(self.server, "description", ""),
            "app_imported": getattr(self.server, "app_imported", True),
        }
        self.status.say("imported " + json.dumps(facts))
        if not self._read_go():
            self._shut_listener()
            return EXIT_PARENT_GONE
        threading.Thread(target=self._read_control, name="reqtrace-control", daemon=True).start()
        return None

    def started(self, worker: int = 0) -> None:
        """Serving (a gunicorn worker says so with its pid)."""
        self.serving = True
        self.status.say(f"serving {worker}" if worker else "serving")

    def stop_accepting(self, connections: int) -> None:
        self._on_stop_accepting(connections)

    def hooks_off(self, reason: str) -> None:
        """No timing hooks in this server: the tracer traces from the kernel only."""
        self.status.say(f"hooks-off {reason}")

    def _read_go(self) -> bool:
        try:
            return os.read(self.control_fd, 1) == b"G"
        except OSError:
            return False

    def _on_started(self, _info: Any) -> None:
        self.serving = True
        self.status.say("serving")

    def _on_stop_accepting(self, connections: int) -> None:
        self._shut_listener()
        self.status.say(f"stopping {connections}")

    # -- stopping --------------------------------------------------------------------------

    def _read_control(self) -> None:
        """Lines from the tracer: "stop REASON", "force"; EOF means the tracer is gone."""
        buffer = b""
        while True:
            try:
                data = os.read(self.control_fd, 4096)
            except OSError:
                data = b""
            if not data:
                self._on_parent_gone()
                return
            buffer += data
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                command, _, reason = line.decode(errors="replace").partition(" ")
                if command == "stop":
                    logger.info("Shutting down: %s.", reason or "asked by reqtrace")
                    self.server.request_shutdown()
                elif command == "force":
                    logger.warning("Asked again: not waiting for requests in flight.")
                    self.server.request_shutdown(force=True)

    def _on_parent_gone(self) -> None:
        """The tracer died: nobody traces any more. Stop accepting now, exit very soon.

        Called on SIGHUP (in the loop) or on EOF of the control pipe (in its reader thread);
        everything here is safe from either thread.
        """
        with self._gone_lock:
            if self.parent_gone:
                return
            self.parent_gone = True
        if not self.serving:
            self._shut_listener()
            os._exit(EXIT_PARENT_GONE)
        logger.warning("The tracer is gone: stopping now, not waiting for requests in flight.")
        watchdog = threading.Timer(PARENT_GONE_GRACE_S, os._exit, (EXIT_PARENT_GONE,))
        watchdog.daemon = True
        watchdog.start()
        self.server.request_shutdown(force=True)

    def _shut_listener(self) -> None:
        """Shut the listening socket down for all its holders: connects are refused now."""
        fd, self.listen_fd = self.listen_fd, -1
        if fd < 0:
            return
        sock = socket.socket(fileno=fd)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracer.session.server_child")
    parser.add_argument("--config", required=True, help="server Config as JSON")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--run-as", default="", help="NAME:UID:GID this process must be")
    parser.add_argument("--fallback-path", default="", help="where reqtrace's httptools is")
    parser.add_argument("--server", default="reqtrace", choices=("reqtrace", "uvicorn", "gunicorn"))
    parser.add_argument("--server-args", default="[]", help="the server's own flags, JSON list")
    args = parser.parse_args(argv)
    parent_pid = os.getppid()
    status = StatusPipe(args.status_fd)

    # Until the event loop runs, the tracer's death simply ends this process.
    death = signal.SIGQUIT if args.server == "gunicorn" else signal.SIGHUP
    signal.signal(death, lambda _signum, _frame: os._exit(EXIT_PARENT_GONE))
    if not end_with_parent(parent_pid, death):
        print("reqtrace: the tracer went away before the server started", file=sys.stderr)
        return EXIT_PARENT_GONE
    if args.run_as:
        try:
            drop_to(Account.from_spec(args.run_as))
        except PrivilegeError as exc:
            print(f"reqtrace: {exc}", file=sys.stderr)
            return EXIT_ENVIRONMENT
    from tracer.server.config import Config

    config = Config(**json.loads(args.config))
    if args.server != "reqtrace":  # the user's own server: its own logging, its own parser
        problem = hosted_problem(args.server)
        if problem:
            print(problem, file=sys.stderr)
            return EXIT_ENVIRONMENT
        server_args = [str(arg) for arg in json.loads(args.server_args)]
        return ChildRun(config, args.control_fd, status, args.server, server_args).run()
    problem = httptools_problem(args.fallback_path)
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_ENVIRONMENT

    from tracer.server.log_setup import configure_logging

    configure_logging(config.log_level, config.access_log)
    return ChildRun(config, args.control_fd, status).run()


def hosted_problem(server: str) -> str:
    """Empty when the app's environment has the server asked for; else what to install."""
    needs = ["uvicorn"] if server == "uvicorn" else ["gunicorn", "uvicorn"]
    missing = [name for name in needs if not _imports(name)]
    if not missing:
        return ""
    return (
        f"reqtrace: --server {server}: the app's environment ({sys.executable}) has no"
        f" {' and no '.join(missing)}; install it there ({sys.executable} -m pip install"
        f" {' '.join(missing)}) or choose the environment with --python"
    )


if __name__ == "__main__":
    sys.exit(main())
