"""The hook pipe when several processes write it (gunicorn's workers): whole frames only.

tracer/server/hook_channel.py's writer may hand the pipe part of a frame and the rest
later: right for one writer, but with several, another worker's bytes could land in
between and the tracer would read garbage. The kernel never interleaves a write of at most
PIPE_BUF bytes (4096) with another, and on a non-blocking pipe such a write is all or
nothing. So this writer cuts each batch into frames of at most PIPE_BUF bytes, in the same
format (hook_channel.py), writes each with one write(), and keeps what the pipe refuses for
the next tick. Costlier per record than the one-writer channel (a write per ~20 records
instead of per 256), and each worker's "dropped" count is its own (the reader keeps the
largest: a lower bound of the total).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import select
import time
from collections import deque

from tracer.records.hooks import HookRecord
from tracer.server.hook_channel import FRAME_LENGTH, KIND_DROPPED, MARSHAL_VERSION, _grow_pipe
from tracer.server.hooks import WireRecord, wire_from_record

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
MAX_PAYLOAD = PIPE_BUF - FRAME_LENGTH.size
logger = logging.getLogger("reqtrace.server")


class AtomicFrameWriter:
    """A wire-record sink whose every write() is one whole frame of at most PIPE_BUF bytes."""

    def __init__(
        self,
        fd: int,
        *,
        flush_interval: float = 0.02,
        batch_records: int = 64,
        max_backlog_frames: int = 256,
    ) -> None:
        os.set_blocking(fd, False)
        _grow_pipe(fd)
        self._fd = fd
        self._flush_interval = flush_interval
        self._batch_records = batch_records
        self._max_backlog_frames = max_backlog_frames
        self._pending: list[WireRecord] = []
        self._frames: deque[tuple[bytes, int]] = deque()  # (frame, records) not yet written
        self._timer: asyncio.TimerHandle | None = None
        self._broken = False
        self.dropped = 0
        self._dropped_reported = 0

    def emit(self, record: HookRecord) -> None:
        self.emit_wire(wire_from_record(record))

    def emit_wire(self, wire: WireRecord) -> None:
        if self._broken:
            self.dropped += 1
            return
        pending = self._pending
        pending.append(wire)
        if len(pending) >= self._batch_records:
            self.flush()
        elif self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._timer = loop.call_later(self._flush_interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()
        if self._frames and not self._broken:
            self._schedule()

    def flush(self) -> None:
        """Write every whole frame the pipe takes now; keep the rest (bounded)."""
        if self._broken:
            return
        pending = self._pending
        if self.dropped != self._dropped_reported:
            pending.append((KIND_DROPPED, self.dropped))
            self._dropped_reported = self.dropped
        if pending:
            self._pending = []
            self._frames.extend(self._cut(pending))
        frames = self._frames
        while frames:
            frame = frames[0][0]
            try:
                os.write(self._fd, frame)  # <= PIPE_BUF: all or nothing
            except BlockingIOError:
                break
            except OSError as exc:  # EPIPE: the tracer is gone
                self._broken = True
                self.dropped += sum(count for _, count in frames)
                frames.clear()
                logger.warning("hook channel closed by the reader (%s); dropping hook records", exc)
                return
            frames.popleft()
        while len(frames) > self._max_backlog_frames:
            self.dropped += frames.pop()[1]

    def _cut(self, records: list[WireRecord]) -> list[tuple[bytes, int]]:
        payload = marshal.dumps(records, MARSHAL_VERSION)
        if len(payload) <= MAX_PAYLOAD:
            return [(FRAME_LENGTH.pack(len(payload)) + payload, len(records))]
        if len(records) == 1:
            self.dropped += 1
            logger.warning("hook channel: dropping a %d-byte record (over PIPE_BUF)", len(payload))
            return []
        parts = min(len(records), len(payload) // MAX_PAYLOAD + 1)
        size = -(-len(records) // parts)
        out: list[tuple[bytes, int]] = []
        for start in range(0, len(records), size):
            out.extend(self._cut(records[start : start + size]))
        return out

    def close(self, timeout: float = 1.0) -> None:
        """Deliver what is pending (waiting at most `timeout` s for the reader)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        deadline = time.monotonic() + timeout
        while self._frames and not self._broken:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            select.select([], [self._fd], [], remaining)
            self.flush()
        if self._frames:
            logger.warning(
                "hook channel: %d timing records were not delivered to the tracer",
                sum(count for _, count in self._frames),
            )
        self._broken = True
        with contextlib.suppress(OSError):
            os.close(self._fd)
