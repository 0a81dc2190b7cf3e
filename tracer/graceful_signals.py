"""Turn SIGTERM and SIGHUP into a normal exit, so `finally` blocks run.

Python's default SIGTERM action kills the process without unwinding: probes would not be
detached by our code, the recording would miss its footer, the terminal would stay raw.
Inside `exit_cleanly_on_signals()` those signals raise SystemExit(0) in the main thread
instead, and every context manager on the way out does its job.
"""

from __future__ import annotations

import contextlib
import signal
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
