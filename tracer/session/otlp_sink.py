"""`reqtrace run --otlp-endpoint URL`: every finished request, as spans, to an OTLP receiver.

The pipeline thread must never wait for the network nor pay for span building, so this sink
only appends traces to a bounded queue (a full queue drops the trace and counts it). One
worker thread does the rest: every `interval_s`, or as soon as a batch is full, it turns up
to `batch_size` traces into spans (tracer/recording/otlp.py) and hands them to the
OpenTelemetry SDK's OTLP/HTTP exporter (protobuf, retries with backoff, standard OTEL_*
environment for headers, TLS, compression and timeout).

- CPU: building and encoding spans costs more than correlating a request (see
  scripts/bench_otlp.py). The worker paces itself to at most `cpu_share` of one core (it
  sleeps in proportion to the CPU each batch took), so under a burst the queue fills and
  drops are counted instead of the pipeline thread waiting for the interpreter lock.
- Failures: a batch the endpoint did not take is dropped and counted. The first failure
  gives ONE warning with the reason (e.g. "connection refused"); the exporter's own retry
  logs are kept off the terminal; when exports work again, one line says so.
- Counters, in requests (not spans): `queued`, `exported`, `dropped` (queue full + failed
  batches + what was still queued at the end). `reqtrace run` writes them into the
  recording footer (otlp_exported, otlp_dropped) and its final line.
- `close()`: flush what is queued, within `flush_timeout_s`; then stop the exporter.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracer.model.trace import RequestTrace
from tracer.recording.otlp import SpanMapper, otlp_resource

QUEUE_SIZE = 2048  # requests waiting for export (a second or two of a busy server)
BATCH_SIZE = 256  # requests per export request (~3,000 spans, ~1 MB of protobuf)
INTERVAL_S = 1.0
CPU_SHARE = 0.25  # of one core, at most, for building and sending spans
FLUSH_TIMEOUT_S = 5.0
EXPORT_TIMEOUT_S = 5.0  # one export request, retries included (the SDK's default is 10)
EXPORTER_LOGGER = "opentelemetry.exporter"  # the OTLP exporter packages log under this


class _LastMessage(logging.Handler):
    """Keeps the exporter's log messages off the terminal; remembers the last warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: deque[str] = deque(maxlen=4)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a malformed log call must not break the export thread
            self.messages.append(str(record.msg))


def failure_reason(messages: list[str]) -> str:
    """A short reason from the exporter's log messages: "connection refused", "HTTP 404"."""
    text = " ".join(messages)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip().lower()
    code = re.search(r"code: (\d{3}), reason: ([^,]+?)(?:$|, | \()", text)
    if code:
        return f"HTTP {code.group(1)} {code.group(2).strip()}".strip()
    if "timed out" in text.lower():
        return "timed out"
    if "max retries" in text.lower():
        return "no success within the export timeout, retries included"
    return (messages[-1] if messages else "the endpoint did not accept the spans")[:160]


def _export_timeout() -> float | None:
    """EXPORT_TIMEOUT_S unless the standard OTEL_* variables set one (then theirs)."""
    names = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    return None if any(os.environ.get(name) for name in names) else EXPORT_TIMEOUT_S


class OtlpSink:
    """A pipeline sink that exports traces as OTLP spans from its own thread."""

    def __init__(
        self,
        endpoint: str,
        header: Mapping[str, Any],
        clock_offset_ns: int,
        service_name: str | None = None,
        resource_attributes: Mapping[str, str] | None = None,
        warn: Callable[[str], None] | None = None,
        exporter: SpanExporter | None = None,
        queue_size: int = QUEUE_SIZE,
        batch_size: int = BATCH_SIZE,
        interval_s: float = INTERVAL_S,
        cpu_share: float = CPU_SHARE,
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.cpu_share = cpu_share
        self.flush_timeout_s = flush_timeout_s
        self.warn = warn
        self.warnings: list[str] = []
        self.queued = 0
        self.exported = 0
        self.dropped = 0
        self.failed_batches = 0
        self.mapper = SpanMapper(
            otlp_resource(header, service_name, resource_attributes), clock_offset_ns
        )
        self._log = _LastMessage()
        self._logger = logging.getLogger(EXPORTER_LOGGER)
        self._logger_state = (self._logger.propagate, list(self._logger.handlers))
        self._logger.addHandler(self._log)
        self._logger.propagate = False
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint, timeout=_export_timeout())
        self.exporter = exporter
        self._queue: deque[RequestTrace] = deque()
        self._lock = threading.Lock()  # counters the worker and close() both change
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight = 0
        self._failing = False
        self._failing_dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="reqtrace-otlp", daemon=True)

    # -- the pipeline thread's side: O(1) per trace, never waits ---------------------------

    def __call__(self, traces: list[RequestTrace]) -> None:
        room = self.queue_size - len(self._queue)
        if room >= len(traces):
            self._queue.extend(traces)
            self.queued += len(traces)
        else:
            taken = max(room, 0)
            self._queue.extend(traces[:taken])
            self.queued += taken
            with self._lock:
                self.dropped += len(traces) - taken
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    # -- the worker ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            while self._queue:
                cpu = self._export(self._take_batch())
                if self._stop.is_set():
                    continue  # flushing: no pacing, close() bounds the time
                self._stop.wait(cpu * (1 - self.cpu_share) / self.cpu_share)
                if len(self._queue) < self.batch_size and not self._stop.is_set():
                    break  # a partial batch waits for the interval
            if stopping:
                return

    def _take_batch(self) -> list[RequestTrace]:
        with self._lock:  # taken and marked in flight at once, for close()'s count
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            self._in_flight = len(batch)
        return batch

    def _export(self, batch: list[RequestTrace]) -> float:
        """Export one batch; returns the CPU time it took (s). Counts what got through."""
        started = time.thread_time()
        try:
            spans = self.mapper.spans_of(batch)
            result = self.exporter.export(spans)
        except Exception as exc:  # the exporter should not raise; if it does, count it
            self._log.messages.append(f"{type(exc).__name__}: {exc}")
            result = SpanExportResult.FAILURE
        with self._lock:
            if not self._in_flight:  # close() gave up on this batch and counted it
                return time.thread_time() - started
            self._in_flight = 0
            if result is SpanExportResult.SUCCESS:
                self.exported += len(batch)
            else:
                self.dropped += len(batch)
                self.failed_batches += 1
        self._note(result is SpanExportResult.SUCCESS, len(batch))
        return time.thread_time() - started

    def _note(self, success: bool, count: int) -> None:
        """One warning when exports start failing, one line when they work again."""
        if success and self._failing:
            self._failing = False
            self._say(
                f"reqtrace: OTLP export to {self.endpoint} works again"
                f" ({self._failing_dropped:,} requests were dropped meanwhile)"
            )
        elif not success:
            if not self._failing:
                self._failing = True
                self._failing_dropped = 0
                reason = failure_reason(list(self._log.messages))
                self._say(
                    f"reqtrace: warning: OTLP export to {self.endpoint} failed ({reason});"
                    " requests are dropped and counted (otlp_dropped) until it answers"
                )
            self._failing_dropped += count
        self._log.messages.clear()

    def _say(self, message: str) -> None:
        self.warnings.append(message)
        if self.warn is not None:
            self.warn(message)

    # -- stopping --------------------------------------------------------------------------

    def close(self) -> None:
        """Export what is queued (bounded by flush_timeout_s), stop; the rest is dropped."""
        if self._closed:
            return
        self._closed = True
        started = self._thread.ident is not None
        if started:
            self._stop.set()
            self._wake.set()
            self._thread.join(self.flush_timeout_s)
        self.exporter.shutdown()  # aborts a retry backoff still waiting
        if started:
            self._thread.join(1.0)
        with self._lock:
            abandoned = self._in_flight + len(self._queue)
            self.dropped += abandoned
            self._in_flight = 0
            self._queue.clear()
        if abandoned and not self._failing:
            reason = failure_reason(list(self._log.messages)) if self._log.messages else ""
            self._say(
                f"reqtrace: warning: OTLP export to {self.endpoint} did not finish in"
                f" {self.flush_timeout_s:g} s{f' ({reason})' if reason else ''};"
                f" {abandoned:,} requests were dropped (otlp_dropped)"
            )
        self._logger.removeHandler(self._log)
        self._logger.propagate = self._logger_state[0]

    def counters(self) -> dict[str, int]:
        """The footer's figures: {"otlp_exported": n, "otlp_dropped": n} (requests)."""
        return {"otlp_exported": self.exported, "otlp_dropped": self.dropped}
