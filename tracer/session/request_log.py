"""`reqtrace run --no-tui`: one line per finished request, for logs and staging."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tracer.model.trace import RequestTrace
from tracer.model.units import format_duration


def request_line(trace: RequestTrace, clock_offset_ns: int) -> str:
    seconds = (trace.start_ns + clock_offset_ns) / 1e9
    when = time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(seconds % 1 * 1000):03d}"
    dominant = trace.dominant_stage()
    top = f"{dominant.name} {format_duration(dominant.duration_ns)}" if dominant else "no stages"
    flag = "" if trace.complete else "  (incomplete)"
    return (
        f"{when} {trace.method} {trace.path} {trace.status or '-'} "
        f"{format_duration(trace.total_ns)}  dominant {top}{flag}"
    )


class RequestLog:
    """A sink: prints each trace as it completes (thread-safe, flushed per batch)."""

    def __init__(self, clock_offset_ns: int, stream: TextIO | None = None) -> None:
        self.clock_offset_ns = clock_offset_ns
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, traces: list[RequestTrace]) -> None:
        lines = "".join(request_line(t, self.clock_offset_ns) + "\n" for t in traces)
        with self._lock:
            self.stream.write(lines)
            self.stream.flush()
