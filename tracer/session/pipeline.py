"""The live pipeline: kernel records and server hooks in, finished request traces out.

One thread runs `step()` in a loop: wait up to 20 ms for the ring buffer, take whatever
the hook pipe holds (attach mode has none: kernel records alone), feed both to the
correlator, let the correlator's clock advance to now (so requests finish even when
traffic stops), tell it about records the ring buffer lost, and hand finished traces to
every sink. The correlator itself never sees a clock or a thread: replaying the raw log
gives the same traces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tracer.correlate.correlator import CorrelatorStats, FeedRecord, record_time
from tracer.kernel.probe_loader import ProbeSession
from tracer.model.trace import RequestTrace
from tracer.server.hook_channel import HookChannelReader

TraceSink = Callable[[list[RequestTrace]], None]

# Two batches further apart than this are fed merged in time order (see in_feed_order).
MERGE_SPREAD_NS = 50_000_000


class CorrelatorLike(Protocol):
    @property
    def stats(self) -> CorrelatorStats: ...
    def feed(self, record: FeedRecord) -> list[RequestTrace]: ...
    def advance(self, now_ns: int) -> list[RequestTrace]: ...
    def note_lost_records(self, count: int) -> None: ...
    def flush(self) -> list[RequestTrace]: ...


@dataclass
class PipelineCounters:
    kernel_records: int = 0
    hook_records: int = 0
    traces: int = 0
    lost_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def lost_records(self) -> int:
        return sum(self.lost_by_type.values())


def in_feed_order(
    kernel: Sequence[FeedRecord], hooks: Sequence[FeedRecord]
) -> Sequence[FeedRecord]:
    """Both batches as one list the correlator's reorder window can take.

    Each stream is nearly in time order, and usually a batch spans one 20 ms step, well
    inside the window: then kernel records followed by hooks is fine. But a batch can span
    much longer (records that piled up while the tracer was busy starting the server, or a
    stalled step): fed one stream after the other, the first would push the window's
    watermark past the second, whose records would all arrive "late". Then merge by time.
    """
    if not kernel or not hooks:
        return kernel or hooks
    kernel_first, kernel_last = record_time(kernel[0]), record_time(kernel[-1])
    hooks_first, hooks_last = record_time(hooks[0]), record_time(hooks[-1])
    if (
        kernel_last - hooks_first <= MERGE_SPREAD_NS
        and hooks_last - kernel_first <= MERGE_SPREAD_NS
    ):
        return [*kernel, *hooks]
    return sorted([*kernel, *hooks], key=record_time)


class Pipeline:
    def __init__(
        self,
        correlator: CorrelatorLike,
        probes: ProbeSession | None,
        hooks: HookChannelReader | None,
        sinks: Sequence[TraceSink],
        poll_ms: int = 20,
    ) -> None:
        self.correlator = correlator
        self.probes = probes
        self.hooks = hooks
        self.sinks = list(sinks)
        self.poll_ms = poll_ms
        self.counters = PipelineCounters()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    # -- one iteration -----------------------------------------------------------------

    def step(self, wait: bool = True) -> int:
        """Move everything available through the correlator; returns traces emitted."""
        with self._lock:
            if self.probes is not None:
                kernel = self.probes.poll(self.poll_ms) if wait else self.probes.drain()
            else:
                if wait:
                    time.sleep(self.poll_ms / 1000)
                kernel = []
            hooks = self.hooks.read() if self.hooks is not None else []
            out: list[RequestTrace] = []
            feed = self.correlator.feed
            for record in in_feed_order(kernel, hooks):
                out.extend(feed(record))
            self.counters.kernel_records += len(kernel)
            self.counters.hook_records += len(hooks)
            self._note_losses()
            out.extend(self.correlator.advance(time.monotonic_ns()))
            self._emit(out)
            return len(out)

    def _note_losses(self) -> None:
        if self.probes is None:
            return
        lost = self.probes.lost_records()
        new = sum(lost.values()) - self.counters.lost_records
        self.counters.lost_by_type = lost
        if new > 0:
            self.correlator.note_lost_records(new)

    def _emit(self, traces: list[RequestTrace]) -> None:
        if not traces:
            return
        self.counters.traces += len(traces)
        for sink in self.sinks:
            sink(traces)

    # -- running -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set; an exception stops the loop and is kept in `error`."""
        try:
            while not stop.is_set():
                self.step()
        except BaseException as exc:  # surfaced by the owner, never lost in a thread
            self.error = exc

    def finish(self, hooks_done: Callable[[], bool], timeout: float = 5.0) -> None:
        """After the server stopped: take the last records, then flush the correlator.

        `hooks_done` says when the server's side of the hook pipe is closed (its last
        records are in). Bounded by `timeout` so a stuck child cannot hold the exit.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step()
            if hooks_done() and (self.hooks is None or self.hooks.eof):
                break
        self.step(wait=False)
        with self._lock:
            self._emit(self.correlator.flush())
