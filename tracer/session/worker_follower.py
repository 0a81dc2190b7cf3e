"""gunicorn's workers into the probes' process filter, as gunicorn forks (and re-forks) them.

The BPF programs trace only the processes in their filter (ProbeSession.set_targets).
gunicorn's master forks its workers after the go, and forks new ones whenever one dies or
is recycled (--max-requests), so the filter must follow: a thread reads the master's
children every POLL_S (from /proc/PID/task/PID/children, else psutil) and writes master +
workers into the filter when that set changes. A worker waits before it serves until its
pid is in (tracer/hosted/gunicorn_worker.py): this thread then creates `<ack_dir>/<pid>`,
so even a worker forked from a preloaded app serves nothing untraced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from tracer.records.kernel import RT_MAX_TARGETS

WORKER_ACK_ENV = "REQTRACE_WORKER_ACK_DIR"
POLL_S = 0.02
MAX_WORKERS = RT_MAX_TARGETS - 1  # the filter holds the master and its workers


class TargetSetter(Protocol):
    def set_targets(
        self, tgids: Iterable[int] = (), ports: Iterable[int] = (), capture_heads: bool = False
    ) -> None: ...


def children_of(pid: int) -> set[int]:
    """The direct children of `pid` (empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    except OSError:  # kernels without CONFIG_PROC_CHILDREN
        import psutil

        try:
            return {child.pid for child in psutil.Process(pid).children()}
        except psutil.Error:
            return set()
    return {int(word) for word in text.split()}


class WorkerFollower:
    """A thread that keeps the probes' process filter equal to the master and its workers."""

    def __init__(self) -> None:
        self.ack_dir = tempfile.mkdtemp(prefix="reqtrace-workers-")
        os.chmod(self.ack_dir, 0o755)  # the workers run as the app's user: they only look
        self.workers: set[int] = set()
        self.seen: list[int] = []  # every worker pid followed, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(
        self, probes: TargetSetter, master: int, ports: Iterable[int], capture_heads: bool = False
    ) -> None:
        """Follow `master`'s children; `capture_heads`: the kernel-only fallback's filters."""
        self._probes, self._master, self._ports = probes, master, set(ports)
        self._capture_heads = capture_heads
        self._thread = threading.Thread(target=self._run, name="reqtrace-workers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(POLL_S)

    def poll(self) -> None:
        workers = children_of(self._master)
        if len(workers) > MAX_WORKERS:  # a worker being replaced: the old one is leaving
            workers = set(sorted(workers)[-MAX_WORKERS:])
        if workers == self.workers:
            return
        self._probes.set_targets(
            tgids={self._master, *workers}, ports=self._ports, capture_heads=self._capture_heads
        )
        for pid in sorted(workers - self.workers):
            self.seen.append(pid)
            with contextlib.suppress(OSError):
                Path(self.ack_dir, str(pid)).touch(mode=0o644)
        for pid in self.workers - workers:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.ack_dir, str(pid)))
        self.workers = workers

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        shutil.rmtree(self.ack_dir, ignore_errors=True)
