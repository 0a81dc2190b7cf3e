"""uvicorn's gunicorn workers (uvicorn.workers or the uvicorn-worker package) with the hooks.

gunicorn forks each worker from its master; a worker is a new process with its own pid, so
each one, before it serves:

1. makes its own writer on the inherited hook pipe (atomic_writer.py: several workers write
   that pipe) and installs its hooks (hook_state.py);
2. waits, at most WORKER_ACK_WAIT_S, until the tracer has put its pid into the probes'
   process filter (the tracer creates the file `<ack_dir>/<pid>` once it has): a worker
   that gunicorn forks later, or restarts, is traced from its first request too;
3. serves with uvicorn's Server and the hooked protocol, telling the run "serving PID"
   after lifespan startup (the ServerStarted record goes to the correlator) and
   "stopping N" when it stops accepting.

The master (gunicorn_run.py) sets `SETTINGS` before it forks; the workers inherit it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from tracer.hosted.atomic_writer import AtomicFrameWriter
from tracer.hosted.hook_state import HostedHooks, install
from tracer.hosted.uvicorn_server import ServerOwner, traced_server_class

WORKER_ACK_WAIT_S = 2.0
WORKER_BOOT_ERROR = 3  # gunicorn's Arbiter.WORKER_BOOT_ERROR


@dataclass(frozen=True)
class WorkerSettings:
    hook_fd: int | None
    status_fd: int
    ack_dir: str
    capture_headers: bool = True


SETTINGS: WorkerSettings | None = None


class WorkerMilestones:
    """A worker's lines on the run's status pipe (the master's are ChildRun's)."""

    def __init__(self, status_fd: int) -> None:
        self.status_fd = status_fd

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a line is < PIPE_BUF: never mixed with another
            os.write(self.status_fd, (line + "\n").encode())

    def app_loaded(self) -> int | None:
        return None

    def started(self) -> None:
        self._say(f"serving {os.getpid()}")

    def stop_accepting(self, connections: int) -> None:
        self._say(f"stopping {connections}")

    def hooks_off(self, reason: str) -> None:
        self._say(f"hooks-off {reason}")


def wait_for_ack(ack_dir: str, timeout: float = WORKER_ACK_WAIT_S) -> bool:
    """Until the tracer says this pid is in the probes' filter (or `timeout`)."""
    if not ack_dir:
        return False
    marker = os.path.join(ack_dir, str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def traced_worker_class(base: type[Any], protocol: type[Any] | None) -> type[Any]:
    """`base` (one of uvicorn's gunicorn workers) serving `protocol` (None: no hooks)."""
    config_kwargs = dict(getattr(base, "CONFIG_KWARGS", {}))
    if protocol is not None:
        config_kwargs["http"] = protocol

    class TracedWorker(base):  # type: ignore[misc]
        CONFIG_KWARGS = config_kwargs

        async def _serve(self) -> None:
            settings = SETTINGS
            owner = ServerOwner(WorkerMilestones(settings.status_fd if settings else -1))
            writer = None
            if settings is not None:
                if protocol is not None and settings.hook_fd is not None:
                    writer = AtomicFrameWriter(settings.hook_fd)
                    install(HostedHooks(writer.emit_wire, settings.capture_headers))
                if not wait_for_ack(settings.ack_dir):
                    self.log.warning("reqtrace: serving before the tracer follows this worker")
            self.config.app = self.wsgi
            server = traced_server_class(owner)(config=self.config)
            install_sigquit = getattr(self, "_install_sigquit_handler", None)
            if callable(install_sigquit):
                install_sigquit()
            try:
                await server.serve(sockets=self.sockets)
            finally:
                install(None)
                if writer is not None:
                    writer.close()
            if not server.started:
                sys.exit(WORKER_BOOT_ERROR)

    TracedWorker.__name__ = TracedWorker.__qualname__ = f"Traced{base.__name__}"
    return TracedWorker
