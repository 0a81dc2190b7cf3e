"""Where a tracing session's finished requests go, for `reqtrace run` and `reqtrace attach`.

- the recording (--record), with --slower-than keeping only the slow requests (the others
  are counted in the footer);
- in a headless session (--no-tui), one line per request (request_log.py) and the last
  requests kept for the final report;
- OTLP spans (--otlp-endpoint, session/otlp_sink.py), from their own thread;
- and, before correlation, every record the correlator gets (--record-raw, to replay).

`correlator(...)` makes the session's correlator (logging its inputs with --record-raw);
`open(header)` makes the sinks for the session's Pipeline; `close(lost_records, extra)`
flushes OTLP first (its counters go in the recording's footer), then writes the footer.
Both sessions call them at the same points, so every mode records and exports alike.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tracer.correlate.correlator import Correlator
from tracer.correlate.kernel_only import KernelOnlyCorrelator
from tracer.model.trace import RequestTrace
from tracer.recording.export import OTLP_PACKAGES_MISSING
from tracer.recording.raw_log import KERNEL_ONLY, AnyCorrelator, LoggingCorrelator, RawLogWriter
from tracer.recording.writer import Recorder
from tracer.session.pipeline import Pipeline, TraceSink
from tracer.session.request_log import RequestLog

if TYPE_CHECKING:
    from tracer.session.otlp_sink import OtlpSink

TAIL_SIZE = 20_000


@dataclass
class TracingResult:
    """What a tracing session counted (RunResult and AttachResult add their own)."""

    requests: int = 0
    recorded: int = 0
    skipped_fast: int = 0  # --slower-than: faster requests only counted
    lost_records: dict[str, int] = field(default_factory=dict)
    stop_reason: str = ""
    otlp_exported: int | None = None  # requests sent as OTLP spans (None: no --otlp-endpoint)
    otlp_dropped: int | None = None


class OutputSettings(Protocol):
    """The options of a session that choose its outputs (RunOptions, AttachOptions)."""

    record: str | None
    record_raw: str | None
    redact: bool
    no_tui: bool
    slower_than_ms: float | None
    otlp_endpoint: str | None
    otlp_service_name: str | None
    otlp_resource: dict[str, str]


def otlp_problem(endpoint: str | None) -> str:
    """Why --otlp-endpoint cannot be used ("" when it can, or is not given)."""
    if endpoint is None:
        return ""
    if not endpoint.startswith(("http://", "https://")):
        return f"--otlp-endpoint must be an http:// or https:// URL, not {endpoint!r}"
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        return OTLP_PACKAGES_MISSING
    return ""


class RecordingSink:
    """Writes traces to the recording; with --slower-than, only slow ones (the rest counted)."""

    def __init__(self, recorder: Recorder, slower_than_ms: float | None) -> None:
        self.recorder = recorder
        self.threshold_ns = None if slower_than_ms is None else slower_than_ms * 1e6
        self.skipped = 0

    def __call__(self, traces: list[RequestTrace]) -> None:
        threshold = self.threshold_ns
        if threshold is None:
            self.recorder.write_many(traces)
            return
        slow = [trace for trace in traces if trace.total_ns >= threshold]
        self.skipped += len(traces) - len(slow)
        self.recorder.write_many(slow)


class Tail:
    """Keeps the last traces for the final report of a --no-tui session (bounded: ~3 KiB a
    trace, so 100,000 held 300 MiB in a long run; the report covers the last TAIL_SIZE)."""

    def __init__(self, size: int = TAIL_SIZE) -> None:
        self.traces: deque[RequestTrace] = deque(maxlen=size)

    def __call__(self, traces: list[RequestTrace]) -> None:
        self.traces.extend(traces)


class TraceOutputs:
    """The sinks of one session, opened once its recording header is known."""

    def __init__(self, settings: OutputSettings, clock_offset_ns: int) -> None:
        self.settings = settings
        self.clock_offset_ns = clock_offset_ns
        self.tail = Tail()
        self.recording: RecordingSink | None = None
        self.otlp: OtlpSink | None = None  # its counters are live (the dashboard shows drops)
        self.raw: RawLogWriter | None = None
        self._closed = False

    def correlator(
        self, kernel_only: bool, poll_functions: Mapping[str, str]
    ) -> AnyCorrelator | LoggingCorrelator:
        """The session's correlator: the KernelOnlyCorrelator for a server without reqtrace's
        hooks; with --record-raw, one that writes every input to the raw file first."""
        made: AnyCorrelator
        if kernel_only:
            made = KernelOnlyCorrelator(poll_functions=poll_functions)
        else:
            made = Correlator(poll_functions=poll_functions)
        path = self.settings.record_raw
        if not path:
            return made
        header = {"correlator": KERNEL_ONLY} if kernel_only else {}
        self.raw = RawLogWriter(path, redact=self.settings.redact, header=header)
        return LoggingCorrelator(made, self.raw)

    def open(self, header: Mapping[str, Any]) -> list[TraceSink]:
        """Start the recording and the OTLP exporter; the sinks to hand to the Pipeline."""
        settings = self.settings
        sinks: list[TraceSink] = []
        if settings.otlp_endpoint is not None:
            from tracer.session.otlp_sink import OtlpSink

            self.otlp = OtlpSink(
                settings.otlp_endpoint,
                header,
                self.clock_offset_ns,
                settings.otlp_service_name,
                settings.otlp_resource,
                warn=(lambda line: print(line, file=sys.stderr)) if settings.no_tui else None,
            )
            self.otlp.start()
        if settings.record:
            recorder = Recorder(settings.record, dict(header), settings.redact)
            self.recording = RecordingSink(recorder, settings.slower_than_ms)
            sinks.append(self.recording)
        if settings.no_tui:  # only a headless session prints the final report from the tail
            sinks += [self.tail, RequestLog(self.clock_offset_ns)]
        if self.otlp is not None:
            sinks.append(self.otlp)
        return sinks

    def finish(self, pipeline: Pipeline, result: TracingResult, extra: Mapping[str, Any]) -> None:
        """After the pipeline's last batch: close every output (the footer gets `extra` and
        the correlator's counters) and count into `result`."""
        result.requests = pipeline.counters.traces
        result.lost_records = dict(pipeline.counters.lost_by_type)
        self.close(
            result.lost_records,
            {
                "stop_reason": result.stop_reason,
                **extra,
                "correlator": pipeline.correlator.stats.as_dict(),
            },
        )
        result.recorded = self.recorded
        result.skipped_fast = self.skipped
        result.otlp_exported = self.otlp_exported
        result.otlp_dropped = self.otlp_dropped

    def close(self, lost_records: Mapping[str, int], extra: Mapping[str, Any]) -> None:
        """Flush OTLP, then write the recording's footer (with the OTLP counters) and close
        the raw file; once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.raw is not None:
                self.raw.close()
        finally:
            otlp_counters: dict[str, int] = {}
            try:
                if self.otlp is not None:
                    self.otlp.close()
                    otlp_counters = self.otlp.counters()
            finally:
                if self.recording is not None:
                    skipped = {
                        "skipped_faster_than_ms": self.settings.slower_than_ms,
                        "skipped": self.recording.skipped,
                    }
                    self.recording.recorder.close(
                        lost_records=dict(lost_records),
                        extra={**skipped, **extra, **otlp_counters},
                    )

    # -- what the final line says ------------------------------------------------------------

    @property
    def recorded(self) -> int:
        return self.recording.recorder.requests if self.recording is not None else 0

    @property
    def skipped(self) -> int:
        return self.recording.skipped if self.recording is not None else 0

    @property
    def otlp_exported(self) -> int | None:
        return None if self.otlp is None else self.otlp.exported

    @property
    def otlp_dropped(self) -> int | None:
        return None if self.otlp is None else self.otlp.dropped
