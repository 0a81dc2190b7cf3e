"""Start the server child and talk to it: the tracer's side of tracer/session/server_child.py.

    child = ServerChild.launch(config, account, python, log_to=None)
    facts = child.wait_imported(stop)     # the app imported (or the child's exit status)
    ... probes ready, socket listening ...
    child.go(); child.wait_serving(stop)
    ... the run ...
    child.request_stop("--duration 10 s reached"); child.wait_exit(grace)

The child is started as the app's account (the interpreter never runs as root) with the
app's interpreter (tracer/session/app_python.py), the listening socket, the hook pipe, a
control pipe (to it) and a status pipe (from it). A thread reads the status lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from typing import Any

from tracer.server.config import Config
from tracer.session.app_python import AppPython, ChildImportPath, child_command
from tracer.session.privileges import Account, account_environment, child_credentials


class ServerChild:
    """The server child process, its pipes, and what it has told us so far."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        control_fd: int,
        status_fd: int,
        paths: ChildImportPath | None,
    ) -> None:
        self.process = process
        self._control_fd = control_fd
        self._paths = paths
        self._changed = threading.Condition()
        self.imported: dict[str, Any] | None = None
        self.serving = False
        self.stopping_connections: int | None = None  # set once it stopped accepting
        self.status_closed = False
        self.missing_module = ""  # the app's import failed for want of this dependency
        self.hooks_off = ""  # why the server has no timing hooks ("" when it has them)
        self.serving_workers: list[int] = []  # gunicorn: the workers that said "serving"
        self.served_before_exit = False
        self._reader = threading.Thread(
            target=self._read_status, args=(status_fd,), name="reqtrace-child-status", daemon=True
        )
        self._reader.start()

    @classmethod
    def launch(
        cls,
        config: Config,
        account: Account,
        python: AppPython,
        hook_fd: int,
        listen_fd: int,
        output: tuple[Any, Any] = (None, None),
        server: str = "reqtrace",
        server_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> ServerChild:
        """Start the child; `server` "uvicorn"/"gunicorn" runs the user's own, with
        `server_args` its own flags (tracer/hosted/)."""
        control_read, control_write = os.pipe()
        status_read, status_write = os.pipe()
        paths = None if python.own else ChildImportPath()
        child_config = dataclasses.replace(
            config, fd=listen_fd, hook_fd=hook_fd, hook_capture_headers=True
        )
        fields = {f.name: getattr(child_config, f.name) for f in dataclasses.fields(child_config)}
        argv = [
            *child_command(python, paths),
            "--config",
            json.dumps(fields),
            "--control-fd",
            str(control_read),
            "--status-fd",
            str(status_write),
        ]
        if not account.is_root:
            argv += ["--run-as", account.spec()]
        if paths is not None and paths.fallback:
            argv += ["--fallback-path", paths.fallback]
        if server != "reqtrace":
            argv += ["--server", server, "--server-args", json.dumps(server_args or [])]
        env = python.environment(os.environ)
        if account.uid != os.geteuid():
            env.update(account_environment(account))
        env.update(extra_env or {})
        try:
            process = subprocess.Popen(
                argv,
                pass_fds=(listen_fd, hook_fd, control_read, status_write),
                stdin=subprocess.DEVNULL,
                stdout=output[0],
                stderr=output[1],
                env=env,
                start_new_session=True,  # Ctrl-C goes to the tracer, which stops the server
                **child_credentials(account),
            )
        except BaseException:
            for fd in (control_read, control_write, status_read, status_write):
                os.close(fd)
            if paths is not None:
                paths.close()
            raise
        os.close(control_read)
        os.close(status_write)
        return cls(process, control_write, status_read, paths)

    @property
    def pid(self) -> int:
        return self.process.pid

    # -- what the child says ----------------------------------------------------------------

    def _read_status(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                word, _, rest = raw.decode(errors="replace").strip().partition(" ")
                with self._changed:
                    if word == "imported":
                        with contextlib.suppress(ValueError):
                            self.imported = json.loads(rest)
                        self.imported = self.imported or {}
                    elif word == "serving":
                        self.serving = self.served_before_exit = True
                        if rest.isdigit():
                            self.serving_workers.append(int(rest))
                    elif word == "hooks-off":
                        self.hooks_off = rest
                    elif word == "missing-module":
                        self.missing_module = rest
                    elif word == "stopping":
                        self.stopping_connections = int(rest) if rest.isdigit() else 0
                    self._changed.notify_all()
        with self._changed:
            self.status_closed = True
            self._changed.notify_all()

    def _wait_for(self, reached: Any, stop: threading.Event | None, timeout: float | None) -> bool:
        """Until reached() or the child exits (its status pipe closes), stop or timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not reached():
                if self.status_closed or (stop is not None and stop.is_set()):
                    return False
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._changed.wait(0.05)
            return True

    def wait_imported(self, stop: threading.Event | None = None) -> bool:
        return self._wait_for(lambda: self.imported is not None, stop, None)

    def wait_serving(self, stop: threading.Event | None = None) -> bool:
        return self._wait_for(lambda: self.serving, stop, None)

    def wait_stopped_accepting(self, timeout: float) -> bool:
        return self._wait_for(lambda: self.stopping_connections is not None, None, timeout)

    # -- what we tell it ----------------------------------------------------------------------

    def _send(self, data: bytes) -> bool:
        if self._control_fd < 0:
            return False
        try:
            os.write(self._control_fd, data)
        except OSError:
            return False
        return True

    def go(self) -> None:
        self._send(b"G")

    def request_stop(self, reason: str) -> None:
        self._send(f"stop {reason}\n".encode())

    def force_stop(self) -> None:
        self._send(b"force\n")

    # -- its end ------------------------------------------------------------------------------

    def exit_status(self) -> int | None:
        return self.process.poll()

    poll = exit_status  # what tracer/session/view.py asks (as of a Popen)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_status_closed(self, timeout: float) -> None:
        self._reader.join(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        """Close the control pipe: before the go, the child gives up and exits."""
        fd, self._control_fd = self._control_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def release(self) -> None:
        """Once the child has exited: the pipes and the private import directories."""
        self.close()
        if self._paths is not None:
            self._paths.close()
            self._paths = None


def describe_status(status: int) -> str:
    """Like 'status 1', or 'killed by SIGKILL' for a negative Popen returncode."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"status {status}"
