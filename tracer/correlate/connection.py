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

from bisect import bisect_left, bisect_right
from collections import deque
from operator import attrgetter

from tracer.correlate.stage_builder import EAGAIN, RequestEvidence
from tracer.model.trace import ConnectionFacts
from tracer.records.kernel import RecvRecord, RxPath, SendRecord, SocketId

RETRANSMIT = "retransmits"
RESET = "resets"
DROP = "drops"
MAX_EVENTS = 256
_new = tuple.__new__  # builds a named tuple from its fields in order
_TS = attrgetter("ts_ns")
WRITE_START = attrgetter("enter_ts")  # the key writes are kept in order by


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
        "recv_claims",
        "recvs",
        "requests_expected",
        "resets",
        "retransmits",
        "send_left",
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
        # Reads that returned data, in time order, and (in step) the seq of the request
        # that claimed each (0: none yet).
        self.recvs: list[RecvRecord] = []
        self.recv_claims: list[int] = []
        self.pruned_last: RecvRecord | None = None  # the newest read dropped from `recvs`
        # Writes not yet fully attributed and (in step) their bytes no response took yet.
        self.sends: list[SendRecord] = []
        self.send_left: list[int] = []
        self.events: deque[tuple[int, str]] = deque(maxlen=MAX_EVENTS)
        self.pending: list[RequestEvidence] = []  # hooks seen, response not complete yet

    # ---- kernel records ----------------------------------------------------------------

    def add_recv(self, record: RecvRecord, limit: int) -> int:
        """Keep a read that returned data; returns how many old reads were dropped."""
        rx = record.rx
        if rx is not None:
            self.last_rx = rx
        recvs = self.recvs
        if recvs and record.ts_ns < recvs[-1].ts_ns:  # a late record: keep the time order
            at = bisect_right(recvs, record.ts_ns, key=_TS)
            recvs.insert(at, record)
            self.recv_claims.insert(at, 0)
        else:
            recvs.append(record)
            self.recv_claims.append(0)
        if len(recvs) <= limit:
            return 0
        dropped = max(len(recvs) - limit, limit // 2)
        self.pruned_last = recvs[dropped - 1]
        del recvs[:dropped], self.recv_claims[:dropped]
        return dropped

    def add_send(self, record: SendRecord, limit: int) -> int:
        """Keep a write until a response takes it; returns how many old writes were dropped.

        Writes stay in `enter_ts` order (a late record is inserted in its place), so a
        response finds its first write by bisection instead of scanning the backlog.
        """
        sends = self.sends
        ret = record.ret
        left = ret if ret > 0 else 0
        if sends and record.enter_ts < sends[-1].enter_ts:
            at = bisect_right(sends, record.enter_ts, key=WRITE_START)
            sends.insert(at, record)
            self.send_left.insert(at, left)
        else:
            sends.append(record)
            self.send_left.append(left)
        if len(sends) <= limit:
            return 0
        dropped = max(len(sends) - limit, limit // 2)
        del sends[:dropped], self.send_left[:dropped]
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
        recvs, claims = self.recvs, self.recv_claims
        first_byte = timing.first_byte_ns
        i = len(recvs) - 1
        while i >= 0 and recvs[i].ts_ns >= first_byte:
            i -= 1
        if i < 0:
            return 0
        seq = timing.seq
        record = recvs[i]
        claimed_by = claims[i]
        if 0 < claimed_by < seq:
            ev.pipelined_with = claimed_by
            ev.delivering_recv = record
        else:
            if not claimed_by:
                claims[i] = seq
            ev.first_recv = record
            ev.recvs.append(record)
            ev.prev_recv = recvs[i - 1] if i else self.pruned_last
        body_end = (
            timing.body_done_ns
            or ev.handoff_ns
            or timing.response_done_ns
            or timing.app_returned_ns
        )
        for j in range(i + 1, len(recvs)):
            later = recvs[j]
            if later.ts_ns > body_end:
                break
            if claims[j] == 0 or claims[j] == seq:
                claims[j] = seq
                ev.recvs.append(later)
        if not i or self.seqs_ahead:
            return 0
        # Reads before this request's first one can serve no later request; that read
        # stays, since a pipelined request may have come in it too.
        unclaimed = claims[:i].count(0)
        self.pruned_last = recvs[i - 1]
        del recvs[:i], claims[:i]
        return unclaimed

    def take_sends(self, ev: RequestEvidence, next_first_chunk_ns: int) -> None:
        """Give the response the writes that carry its bytes (see the module docstring).

        The writes are in time order: the response's first candidate is found by
        bisection at its first chunk, and the writes it takes are cut out of the list in
        one slice, so the cost is the writes taken, not the backlog of later responses'
        writes waiting for their hook records.
        """
        if ev.bytes_left <= 0:
            return
        sends = self.sends
        lefts = self.send_left
        chunks = ev.timing.chunks
        start = bisect_left(sends, ev.first_chunk_ns, key=WRITE_START)
        end = start
        count = len(sends)
        partial: list[SendRecord] = []
        partial_left: list[int] = []
        while end < count:
            send = sends[end]
            enter = send.enter_ts
            if not ev.backpressured and (
                0 < next_first_chunk_ns <= enter
                or (enter > ev.sort_ts and self._read_after(ev, enter))
            ):
                break  # the rest of this response was lost, not late
            end += 1
            ret = send.ret
            if ret <= 0:
                if ret == -EAGAIN:
                    ev.eagain += 1
                    ev.backpressured = True
                ev.sends.append((send, 0))
                continue
            left = lefts[end - 1]
            if left == ret and ret < _chunk_bytes_at(chunks, enter):
                ev.backpressured = True  # a short write: the rest waits for the socket
            take = left if left <= ev.bytes_left else ev.bytes_left
            ev.sends.append((send, take))
            ev.bytes_left -= take
            if left > take:  # only when the response is complete: the rest is the next's
                partial.append(send)
                partial_left.append(left - take)
            if not ev.bytes_left:
                break
        if end > start:
            sends[start:end] = partial
            lefts[start:end] = partial_left

    def _read_after(self, ev: RequestEvidence, ts_ns: int) -> bool:
        """Whether another request was read after this one's reads and before `ts_ns`.

        Its response cannot come before it was read, so a write after that read (and
        after this request's cycle ended, without backpressure) belongs to a later request
        whose hook has not arrived yet.
        """
        mine = ev.recvs[-1] if ev.recvs else ev.delivering_recv
        if mine is None:
            return False
        seq = ev.timing.seq
        recvs = self.recvs
        claims = self.recv_claims
        at = bisect_right(recvs, mine.ts_ns, key=_TS)  # reads are kept in time order
        while at < len(recvs) and recvs[at].ts_ns < ts_ns:
            if claims[at] != seq:
                return True
            at += 1
        return False

    def drop_sends_before(self, ts_ns: int) -> int:
        """Forget writes that began before `ts_ns` (no response can claim them any more)."""
        dropped = bisect_left(self.sends, ts_ns, key=WRITE_START)
        if dropped:
            del self.sends[:dropped], self.send_left[:dropped]
        return dropped

    def unclaimed_reads(self) -> int:
        """Reads with data that no request claimed (yet)."""
        return self.recv_claims.count(0)

    def unattributed_writes(self) -> int:
        """Writes with bytes that no response took (yet)."""
        return len(self.send_left) - self.send_left.count(0)

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
        return _new(
            ConnectionFacts,
            (
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
            ),
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
