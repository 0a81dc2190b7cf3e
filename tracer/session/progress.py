"""What `reqtrace run` is doing while nothing else is on screen: one line per step, on stderr.

Startup (checking, importing the app, the probe plan, compiling or loading, attaching,
serving) and shutdown (stopping the server, requests in flight, detaching) each say what
they do as they begin, so a slow step is never a blank screen. With the dashboard, the
lines appear before it takes the screen and after it gives it back.

While clang compiles in a worker thread, BCC's native output is captured by redirecting
file descriptor 2 itself (tracer/kernel/native_stderr.py): anything the run says meanwhile
would vanish into that capture. `own_stderr()` gives Python's sys.stderr its own descriptor
for the run, so progress lines and messages always reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        stream = self.stream or sys.stderr
        print(f"reqtrace: {text}", file=stream, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextlib.contextmanager
def own_stderr() -> Iterator[None]:
    """sys.stderr on a duplicate of descriptor 2: native captures of fd 2 do not swallow it."""
    try:
        fd = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no real descriptor (tests, embedding)
        yield
        return
    previous = sys.stderr
    sys.stderr = os.fdopen(fd, "w", buffering=1, encoding=previous.encoding, errors="replace")
    try:
        yield
    finally:
        replaced, sys.stderr = sys.stderr, previous
        replaced.close()
