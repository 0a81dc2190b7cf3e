"""Turn SIGTERM and SIGHUP into a normal exit (or a stop request), so cleanups run.

Python's default SIGTERM action kills the process without unwinding: probes would not be
detached by our code, the recording would miss its footer, the terminal would stay raw.
Inside `exit_cleanly_on_signals()` those signals raise SystemExit(0) in the main thread
instead, and every context manager on the way out does its job.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP)


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextlib.contextmanager
def exit_cleanly_on_signals() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _raise_exit) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SIGNAL_REASONS: dict[int, str] = {
    signal.SIGINT: "Ctrl-C (SIGINT)",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP",
}


class StopRequest(threading.Event):
    """An Event that remembers why it was first set, and how many times it was asked.

    `set()` (e.g. the dashboard's request_stop) is a stop without a stated reason; the
    first reason given wins. `count` lets a second Ctrl-C mean "stop waiting".
    """

    DEFAULT_REASON = "asked to stop"

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""
        self.count = 0

    def request(self, reason: str) -> None:
        self.count += 1
        if not self.reason:
            self.reason = reason
        super().set()

    def set(self) -> None:
        self.request(self.DEFAULT_REASON)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Make Ctrl-C, SIGTERM and SIGHUP set `stop` instead of interrupting whatever runs.

    For a long-running command that polls `stop` (reqtrace run): a signal that arrives while
    probes are compiling or the server is starting is not lost, and it never lands in the
    middle of a cleanup step. Previous handlers are restored on the way out.
    """

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        if isinstance(stop, StopRequest):
            stop.request(SIGNAL_REASONS.get(signum, f"signal {signum}"))
        else:
            stop.set()

    previous = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
