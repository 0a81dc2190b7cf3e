"""Per-connection state of the correlator: the kernel's reads and writes on one TCP
connection, its facts, and the rules that hand those records to the connection's requests.

One `Connection` is one generation of a connection: a socket (sk + 4-tuple) on the kernel
side and a (pid, conn_id) on the hook side. A reused fd number or a reused sk address
starts a new `Connection`, so records of two connections never mix (connection_table.py
keeps the indexes that find the right one).

Attribution rules (records arrive here in timestamp order):

- Reads. The server calls data_received right after recv returns, so the read that
  delivered a request's first bytes is the last read with data whose exit precedes the
  hook's first_byte_ns. Reads after it up to the end of the request body (body_done_ns)
  are the request's too (multi-segment requests, uploads). If that read was already
  claimed by an earlier request, both requests came in one read: the later one is
  pipelined and gets no kernel stages of its own.
- Writes. A response's bytes can only be sent after the app handed them to the transport,
  so a send belongs to the oldest unfinished response whose first chunk precedes it; bytes
  are counted against the response size, so a write that carries the end of one response
  and the start of the next is split between them. A send that starts after the NEXT
  response's first chunk, or after the cycle ended and another request was read, only
  belongs to the earlier response when that one hit a full socket buffer (EAGAIN or a
  short write): otherwise the earlier response's missing bytes were lost records, and
  attributing later sends to it would shift every later request.
"""

from __future__ import annotations

from bisect import insort
from collections import deque

from tracer.records import RecvRecord, RxPath, SendRecord, SocketId
from tracer.stage_builder import EAGAIN, RequestEvidence
from tracer.trace_model import ConnectionFacts

RETRANSMIT = "retransmits"
RESET = "resets"
DROP = "drops"
MAX_EVENTS = 256


class RecvEntry:
    """A read that returned data, and which request (by seq) claimed it (0: none yet)."""

    __slots__ = ("claimed_by", "record")

    def __init__(self, record: RecvRecord) -> None:
        self.record = record
        self.claimed_by = 0

    def __lt__(self, other: RecvEntry) -> bool:
        return self.record.ts_ns < other.record.ts_ns


class SendEntry:
    """A write not yet fully attributed, with its bytes no response has taken yet."""

    __slots__ = ("bytes_left", "record")

    def __init__(self, record: SendRecord) -> None:
        self.record = record
        self.bytes_left = max(0, record.ret)


class Connection:
    """One generation of one connection: identity, facts, and records awaiting requests."""

    __slots__ = (
        "accepted_ns",
        "client",
        "close_deadline_ns",
        "closed_by",
        "conn_id",
        "drops",
        "emitted",
        "established_ns",
        "events",
        "fd",
        "hook_closed",
        "kernel_closed",
        "last_activity_ns",
        "last_rx",
        "lost_note_ns",
        "next_seq",
        "peer_key",
        "pending",
        "pid",
        "pruned_last",
        "recvs",
        "requests_expected",
        "resets",
        "retransmits",
        "sends",
        "seqs_ahead",
        "serial",
        "server",
        "sock",
        "syn_recv_ns",
        "tid",
        "unix",
    )

    def __init__(self, serial: int, now_ns: int) -> None:
        self.serial = serial
        self.sock: SocketId | None = None
        self.peer_key: tuple[str, int, int] | None = None
        self.pid = 0
        self.tid = 0
        self.fd = -1
        self.conn_id = 0  # 0 until a hook record names it
        self.client: tuple[str, int] = ("", 0)
        self.server: tuple[str, int] = ("", 0)
        self.unix = False
        self.syn_recv_ns = 0
        self.established_ns = 0
        self.accepted_ns = 0
        self.last_rx: RxPath | None = None  # srtt and windows as of the latest segment
        self.retransmits = 0
        self.resets = 0
        self.drops = 0
        self.closed_by = ""
        self.kernel_closed = False
        self.hook_closed = False
        self.requests_expected = -1  # from ConnectionClosed; -1 until the server says
        self.emitted = 0  # requests emitted on this connection
        self.next_seq = 0  # lowest request seq whose hook has not been seen (0: unknown)
        self.seqs_ahead: set[int] = set()  # seqs seen above a gap (hooks out of seq order)
        self.last_activity_ns = now_ns
        self.close_deadline_ns = 0
        self.lost_note_ns = 0
        self.recvs: list[RecvEntry] = []
        self.pruned_last: RecvRecord | None = None  # the newest read dropped from `recvs`
        self.sends: list[SendEntry] = []
        self.events: deque[tuple[int, str]] = deque(maxlen=MAX_EVENTS)
        self.pending: list[RequestEvidence] = []  # hooks seen, response not complete yet

    # ---- kernel records ----------------------------------------------------------------

    def add_recv(self, record: RecvRecord, limit: int) -> int:
        """Keep a read that returned data; returns how many old reads were dropped."""
        if record.rx is not None:
            self.last_rx = record.rx
        entries = self.recvs
        entry = RecvEntry(record)
        if entries and record.ts_ns < entries[-1].record.ts_ns:
            insort(entries, entry)  # a late record: keep the list in time order
        else:
            entries.append(entry)
        if len(entries) <= limit:
            return 0
        dropped = max(len(entries) - limit, limit // 2)
        self.pruned_last = entries[dropped - 1].record
        del entries[:dropped]
        return dropped

    def add_send(self, record: SendRecord, limit: int) -> int:
        """Keep a write until a response takes it; returns how many old writes were dropped."""
        sends = self.sends
        sends.append(SendEntry(record))
        if len(sends) <= limit:
            return 0
        dropped = max(len(sends) - limit, limit // 2)
        del sends[:dropped]
        return dropped

    def add_event(self, ts_ns: int, kind: str) -> None:
        """A retransmit, reset or drop on this connection (counted, and kept for requests)."""
        if kind == RETRANSMIT:
            self.retransmits += 1
        elif kind == RESET:
            self.resets += 1
        else:
            self.drops += 1
        self.events.append((ts_ns, kind))

    def events_between(self, start_ns: int, end_ns: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ts, kind in self.events:
            if start_ns <= ts <= end_ns:
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    # ---- hook sequence ------------------------------------------------------------------

    def note_seq(self, seq: int) -> None:
        """Track which request numbers were seen, to know when reads may be forgotten."""
        if not self.next_seq:
            self.next_seq = seq
        if seq == self.next_seq:
            self.next_seq += 1
            ahead = self.seqs_ahead
            while self.next_seq in ahead:
                ahead.discard(self.next_seq)
                self.next_seq += 1
        elif seq > self.next_seq and len(self.seqs_ahead) < 1024:
            self.seqs_ahead.add(seq)

    # ---- attribution ----------------------------------------------------------------------

    def claim_recvs(self, ev: RequestEvidence) -> int:
        """Give the request the read that delivered its first bytes and its later reads.

        Returns how many reads no request claimed and that can now be forgotten.
        """
        timing = ev.timing
        entries = self.recvs
        first_byte = timing.first_byte_ns
        i = len(entries) - 1
        while i >= 0 and entries[i].record.ts_ns >= first_byte:
            i -= 1
        if i < 0:
            return 0
        seq = timing.seq
        entry = entries[i]
        if 0 < entry.claimed_by < seq:
            ev.pipelined_with = entry.claimed_by
            ev.delivering_recv = entry.record
        else:
            entry.claimed_by = entry.claimed_by or seq
            ev.first_recv = entry.record
            ev.recvs.append(entry.record)
            ev.prev_recv = entries[i - 1].record if i else self.pruned_last
        body_end = (
            timing.body_done_ns
            or ev.handoff_ns
            or timing.response_done_ns
            or timing.app_returned_ns
        )
        for j in range(i + 1, len(entries)):
            later = entries[j]
            if later.record.ts_ns > body_end:
                break
            if later.claimed_by in (0, seq):
                later.claimed_by = seq
                ev.recvs.append(later.record)
        if not i or self.seqs_ahead:
            return 0
        # Reads before this request's first one can serve no later request; that read
        # stays, since a pipelined request may have come in it too.
        unclaimed = 0
        for older in entries[:i]:
            if not older.claimed_by:
                unclaimed += 1
        self.pruned_last = entries[i - 1].record
        del entries[:i]
        return unclaimed

    def take_sends(self, ev: RequestEvidence, next_first_chunk_ns: int) -> None:
        """Give the response the writes that carry its bytes (see the module docstring)."""
        if ev.bytes_left <= 0:
            return
        chunks = ev.timing.chunks
        kept: list[SendEntry] = []
        taking = True
        for entry in self.sends:
            send = entry.record
            if not taking or send.enter_ts < ev.first_chunk_ns:
                kept.append(entry)
                continue
            if not ev.backpressured and (
                0 < next_first_chunk_ns <= send.enter_ts
                or (send.enter_ts > ev.sort_ts and self._read_after(ev, send.enter_ts))
            ):
                taking = False  # the rest of this response was lost, not late
                kept.append(entry)
                continue
            if send.ret <= 0:
                if send.ret == -EAGAIN:
                    ev.eagain += 1
                    ev.backpressured = True
                ev.sends.append((send, 0))
                continue
            fresh = entry.bytes_left == send.ret
            if fresh and send.ret < _chunk_bytes_at(chunks, send.enter_ts):
                ev.backpressured = True  # a short write: the rest waits for the socket
            take = min(entry.bytes_left, ev.bytes_left)
            ev.sends.append((send, take))
            ev.bytes_left -= take
            entry.bytes_left -= take
            if entry.bytes_left:
                kept.append(entry)
            if not ev.bytes_left:
                taking = False
        self.sends = kept

    def _read_after(self, ev: RequestEvidence, ts_ns: int) -> bool:
        """Whether another request was read after this one's reads and before `ts_ns`.

        Its response cannot come before it was read, so a write after that read (and
        after this request's cycle ended, without backpressure) belongs to a later request
        whose hook has not arrived yet.
        """
        mine = ev.recvs[-1] if ev.recvs else ev.delivering_recv
        if mine is None:
            return False
        after = mine.ts_ns
        seq = ev.timing.seq
        for entry in self.recvs:
            ts = entry.record.ts_ns
            if after < ts < ts_ns and entry.claimed_by != seq:
                return True
        return False

    def drop_sends_before(self, ts_ns: int) -> int:
        """Forget writes that began before `ts_ns` (no response can claim them any more)."""
        sends = self.sends
        if not sends or sends[0].record.enter_ts >= ts_ns:
            return 0
        kept = [entry for entry in sends if entry.record.enter_ts >= ts_ns]
        self.sends = kept
        return len(sends) - len(kept)

    # ---- facts ------------------------------------------------------------------------------

    def facts(self) -> ConnectionFacts:
        established, syn_recv, accepted = self.established_ns, self.syn_recv_ns, self.accepted_ns
        rx = self.last_rx
        handshake = None
        if established and 0 < syn_recv <= established:
            handshake = (established - syn_recv) / 1000
        accept_queue = None
        if accepted and 0 < established <= accepted:
            accept_queue = (accepted - established) / 1000
        return ConnectionFacts(
            handshake,
            accept_queue,
            established,
            accepted,
            rx.srtt_us if rx is not None else None,
            rx.rcv_wnd if rx is not None else None,
            rx.snd_wnd if rx is not None else None,
            self.retransmits,
            self.resets,
            self.drops,
            self.emitted,  # requests_served
            self.closed_by,
        )

    def finished(self) -> bool:
        """Both sides are done with this connection and no request waits for records."""
        if self.pending:
            return False
        kernel_done = self.kernel_closed or self.sock is None
        hook_done = self.conn_id == 0 or (
            self.hook_closed and max(0, self.next_seq - 1) >= self.requests_expected
        )
        return kernel_done and hook_done


def _chunk_bytes_at(chunks: tuple[tuple[int, int], ...], ts_ns: int) -> int:
    """Size of the last transport.write at or before `ts_ns` (0 if none)."""
    for chunk_ts, size in reversed(chunks):
        if chunk_ts <= ts_ns:
            return size
    return 0
