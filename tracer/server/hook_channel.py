"""The pipe that carries timing-hook records from the server child to the tracer.

Why a pipe: the tracer's kernel probes watch socket sends; if the records travelled over a
unix socket, the probes would see the tracer's own plumbing as traffic. A pipe's write()
is not a socket send.

Wire format (one stream of frames, written by one process, read by one process):

    frame   = length payload
    length  = 4 bytes, unsigned little-endian: number of bytes in payload
    payload = marshal.dumps([record, ...], 4)   # one batch: a list of records, in order
    record  = (kind, *fields)   # fields in the order of hook_record.py
    kind    = "open" (ConnectionOpened) | "request" (RequestTiming) | "close" (ConnectionClosed)
            | "dropped"  -> ("dropped", total): channel-level, never a hook record; `total`
                            is the cumulative number of records this writer had to drop.

Marshal is used because both ends are the same Python and it is the fastest serializer of
tuples of ints and strings in the standard library for writing these records (pickle
writes them ~25% slower, and the writer is the server's event loop). Format version 4
(Python 3.4+): it writes ASCII strings and small tuples in short forms without making a
temporary object, and repeated objects (a connection's ids tuple, "GET", "ok") as
back-references, where version 2 encodes every string to a new UTF-8 bytes object first;
measured on batches of 256 request records, v4 takes ~280 ns per record to dump and ~400
to load, v2 ~550 and ~580, and a record is ~179 bytes instead of 220. A whole batch is one frame and
one marshal call: per record that is C work only, where a frame per record cost a Python
call, a length prefix and a join each, on both ends. It is NOT safe against a hostile
writer; the reader bounds frame sizes and checks each tuple's shape, and the writer is the
tracer's own child process.

Writer behaviour: records are batched (as tuples: emit is a list append) and marshalled
as one frame, written on a ~20 ms timer, or at once when 256 are waiting (a batch bigger
than the frame limit, possible only with captured headers, is split). The fd is
non-blocking and the pipe is enlarged to 1 MiB: the event loop never waits on the pipe,
and a tracer that is briefly late costs nothing. When the reader is slow for longer,
frames wait in a bounded backlog (1 MiB); beyond that, new records are dropped and
counted, and the count travels in the next "dropped" frame (and is logged at close if it
cannot be delivered) - never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import marshal
import os
import select
import struct
import time
from collections import deque
from collections.abc import Iterator

from tracer.records.hooks import HookRecord
from tracer.server.hooks import HookWireError, WireRecord, record_from_wire, wire_from_record

MARSHAL_VERSION = 4
FRAME_LENGTH = struct.Struct("<I")
MAX_FRAME_BYTES = 1 << 20
KIND_DROPPED = "dropped"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1 << 20

logger = logging.getLogger("reqtrace.server")


class HookChannelError(Exception):
    """The byte stream is not a valid sequence of frames (corrupt or not our writer)."""


class HookChannelWriter:
    """A `HookSink` that writes framed records to the write end of a pipe.

    Create it anywhere; it binds to the running event loop on first use and must then only
    be used from that loop's thread.
    """

    def __init__(
        self,
        fd: int,
        *,
        flush_interval: float = 0.02,
        batch_records: int = 256,
        max_backlog_bytes: int = 1 << 20,
        close_fd: bool = True,
    ) -> None:
        os.set_blocking(fd, False)
        _grow_pipe(fd)
        self._fd = fd
        self._close_fd = close_fd
        self._flush_interval = flush_interval
        self._batch_records = batch_records
        self._max_backlog_bytes = max_backlog_bytes
        self._pending: list[WireRecord] = []  # records not yet marshalled and written
        self._backlog = b""  # bytes write() did not take yet; may start in the middle of a frame
        self._backlog_frames: deque[list[int]] = deque()  # [bytes not written, records]
        self._timer: asyncio.TimerHandle | None = None
        self._refusing = False  # backlog full, reader gone, or closed: count, do not queue
        self._broken = False
        self._closed = False
        self.records_written = 0  # records handed to the pipe (fully or in part)
        self.dropped = 0  # records not delivered: pipe full for long, or reader gone
        self._dropped_reported = 0

    # HookSink -------------------------------------------------------------------------
    def emit(self, record: HookRecord) -> None:
        self.emit_wire(wire_from_record(record))

    def emit_wire(self, wire: WireRecord) -> None:
        """Queue one record (a list append); marshalling happens per batch in flush()."""
        if self._refusing:
            self._refuse()
            return
        pending = self._pending
        pending.append(wire)
        if len(pending) >= self._batch_records:
            self.flush()
        elif self._timer is None:
            self._schedule_flush()

    def _refuse(self) -> None:
        self.dropped += 1
        if self._timer is None and not (self._broken or self._closed):
            self._schedule_flush()  # report the drops once the pipe takes data again

    # Writing --------------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside the loop (tests, close): write now
            self.flush()
            return
        self._timer = loop.call_later(self._flush_interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()
        if self._backlog and not self._broken and not self._closed:
            self._schedule_flush()  # the pipe was full: try again on the next tick

    def flush(self) -> None:
        """Hand everything pending to the pipe without blocking; keep what it refuses."""
        if self._broken:
            return
        pending = self._pending
        if self.dropped != self._dropped_reported:
            pending.append((KIND_DROPPED, self.dropped))
            self._dropped_reported = self.dropped
        if not pending and not self._backlog:
            return
        frames = _frames(pending) if pending else []
        self.dropped += len(pending) - sum(records for _, records in frames)  # oversized
        self.records_written += len(pending)
        self._pending = []
        backlog_frames = self._backlog_frames
        backlog_frames.extend([len(frame), records] for frame, records in frames)
        data = self._backlog + b"".join(frame for frame, _ in frames)
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # EPIPE: the reader is gone
            self._broken = self._refusing = True
            self.dropped += sum(records for _, records in backlog_frames)
            self._backlog = b""
            backlog_frames.clear()
            logger.warning("hook channel closed by the reader (%s); dropping hook records", exc)
            return
        self._backlog = data[written:]
        while written and backlog_frames:  # forget the frames that are now fully written
            head = backlog_frames[0]
            if head[0] > written:
                head[0] -= written
                break
            written -= head[0]
            backlog_frames.popleft()
        self._refusing = len(self._backlog) > self._max_backlog_bytes

    def close(self, timeout: float = 1.0) -> None:
        """Deliver what is pending (waiting at most `timeout` s for the reader), then close."""
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        deadline = time.monotonic() + timeout
        while self._backlog and not self._broken:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            select.select([], [self._fd], [], remaining)
            self.flush()
        self._closed = self._refusing = True
        undelivered = sum(records for _, records in self._backlog_frames)
        if undelivered or (self.dropped and self._broken):
            logger.warning(
                "hook channel: %d timing records were not delivered to the tracer",
                self.dropped + undelivered,
            )
        if self._close_fd:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def _grow_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    """Ask for a bigger pipe buffer (Linux; best effort).

    The default 64 KiB holds ~6 ms of records at 60k requests/s: a reader that is a little
    late would make every batch a partial write. 1 MiB (the unprivileged maximum) holds
    ~100 ms, so writes stay whole and cheap and nothing is dropped while the tracer is busy.
    """
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)


def _frames(records: list[WireRecord]) -> list[tuple[bytes, int]]:
    """`records` as frames of at most MAX_FRAME_BYTES, with how many records each holds."""
    payload = marshal.dumps(records, MARSHAL_VERSION)
    if len(payload) <= MAX_FRAME_BYTES:
        return [(FRAME_LENGTH.pack(len(payload)) + payload, len(records))]
    if len(records) == 1:  # cannot be split: the reader would refuse it
        logger.warning(
            "hook channel: dropping a %d-byte record (over the frame limit)", len(payload)
        )
        return []
    half = len(records) // 2
    return _frames(records[:half]) + _frames(records[half:])


class HookChannelReader:
    """The tracer's end: reads frames from the pipe's read end and yields hook records.

    Non-blocking and incremental: `read()` takes whatever the pipe holds now, keeps a
    partial frame for next time, and returns the complete records. Use `fileno()` with
    select/epoll to wait for data. `feed()` is the same parser without any I/O (for tests
    and replays). `dropped` is the writer's cumulative count of records it had to drop.
    """

    def __init__(self, fd: int, *, close_fd: bool = True) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._close_fd = close_fd
        self._buffer = bytearray()
        self.dropped = 0
        self.records_read = 0
        self.eof = False

    def fileno(self) -> int:
        return self._fd

    def feed(self, data: bytes) -> list[HookRecord]:
        """Parse `data` (any slice of the stream) and return the records it completes."""
        buffer = self._buffer
        buffer += data
        records: list[HookRecord] = []
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            (length,) = FRAME_LENGTH.unpack_from(buffer, offset)
            if length > MAX_FRAME_BYTES:
                raise HookChannelError(f"hook frame of {length} bytes is over the limit")
            end = offset + 4 + length
            if end > size:
                break
            try:
                batch = marshal.loads(bytes(buffer[offset + 4 : end]))
            except (EOFError, ValueError, TypeError) as exc:
                raise HookChannelError(f"corrupt hook frame: {exc}") from exc
            offset = end
            if not isinstance(batch, list):
                raise HookChannelError(f"hook frame holds a {type(batch).__name__}, not a batch")
            for wire in batch:
                if isinstance(wire, tuple) and len(wire) == 2 and wire[0] == KIND_DROPPED:
                    self.dropped = max(self.dropped, int(wire[1]))
                    continue
                try:
                    records.append(record_from_wire(wire))
                except (HookWireError, TypeError) as exc:
                    raise HookChannelError(f"bad hook record: {exc}") from exc
        del buffer[:offset]
        self.records_read += len(records)
        return records

    def read(self) -> list[HookRecord]:
        """All records that can be completed from what the pipe holds right now."""
        records: list[HookRecord] = []
        while not self.eof:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
                break
            records.extend(self.feed(data))
        return records

    def records(self) -> Iterator[HookRecord]:
        """Yield the records available now (see `read`)."""
        yield from self.read()

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held for the next read (non-zero at EOF = truncated)."""
        return len(self._buffer)

    def close(self) -> None:
        if self._close_fd:
            with contextlib.suppress(OSError):
                os.close(self._fd)
