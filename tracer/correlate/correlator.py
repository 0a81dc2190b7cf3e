"""The correlator: kernel records + server hook records in, completed request traces out.

    correlator = Correlator()
    for record in records:                  # kernel records and hook records, any order
        for trace in correlator.feed(record):
            sink(trace)
    correlator.advance(time.monotonic_ns())  # live runs: a quiet stream still completes
    correlator.note_lost_records(n)          # the ring buffer dropped n records
    for trace in correlator.flush():         # end of stream
        sink(trace)

Theory of operation
-------------------
Sans-IO (like h11): no BPF, no threads, no clock, no I/O. Time advances only through the
timestamps it is fed (and `advance`), so live runs, replays of raw-record files and tests
all go through `feed()` and the same sequence of calls always gives the same traces.

1. Reorder. Both streams arrive in ~20 ms batches and out of order with each other; the
   kernel's CPUs interleave by a few ms. Every record waits in a bounded reorder window
   (reorder.py) keyed by its timestamp: kernel records by their ts_ns, hook records by
   when they were emitted (a RequestTiming by its latest timestamp). Records come out in
   time order once the watermark (newest timestamp seen minus the window) passes them.
   Records later than that are processed at once (counted as late) and may leave a
   request incomplete, never inconsistent.

2. Join (connection_table.py). A kernel socket is (sk, client address, client port): a
   reused sk or fd can never merge two connections. Hook records name (pid, conn_id).
   They meet through the client end (ConnectionOpened's peer = the socket's remote end)
   or, when the open was missed, through (pid, fd). Accept records join on (pid, fd) too.
   Each connection generation is one `Connection` (connection_state.py), where its reads
   and writes wait for their requests.

3. Attribute. When a request's RequestTiming comes out of the window, every read that
   could belong to it has been seen: its first read is the last one before its first
   byte; its writes are taken by byte count from its first chunk on (connection_state.py
   has the rules for pipelining, uploads, split writes and backpressure). A request whose
   bytes are all accounted for is emitted at once; otherwise it waits for late writes
   until a deadline: a short settle time, or a long drain timeout when the socket buffer
   was full. Retransmits, resets and drops count for the connection and for the request
   whose time span contains them.

4. Build. stage_builder.py turns the evidence into stages, notes and details; connection
   facts (handshake, accept queue, srtt, windows, counters) are attached to every request.

5. Bound. Everything is bounded: the reorder window (forced early release), connections
   (least recently active evicted), reads and writes per connection, pending requests per
   connection, unjoined accepts. Closed connections linger briefly for late hook records,
   then go; idle ones are swept. Every eviction and every record that matched nothing is
   counted in `stats`.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tracer.correlate.connection import DROP, RESET, RETRANSMIT, WRITE_START, Connection
from tracer.correlate.connection_table import TCP_CLOSE, ConnectionTable
from tracer.correlate.loop_blame import LoopHistory
from tracer.correlate.reorder import ReorderBuffer
from tracer.correlate.stage_builder import RequestEvidence, build_timeline
from tracer.model.stages import LOOP_WAIT_STAGES
from tracer.model.trace import RequestTrace
from tracer.records.hooks import (
    HOOK_RECORD_TYPES,
    ConnectionClosed,
    ConnectionOpened,
    HookRecord,
    RequestTiming,
    ServerStarted,
    request_stamps,
)
from tracer.records.kernel import (
    AcceptRecord,
    DropRecord,
    KernelRecord,
    RecvRecord,
    ResetRecord,
    RetransmitRecord,
    SendRecord,
    SocketId,
    StateRecord,
)

FeedRecord = KernelRecord | HookRecord

MS = 1_000_000
DEFAULT_REORDER_WINDOW_NS = 250 * MS


SWEEP_EVERY = 8192  # records between idle sweeps (at least one per connection)
EMITTED = -1  # RequestEvidence.deadline_ns of a request whose trace was emitted
MIN_DEADLINES_COMPACTION = 4096  # deadline entries before stale ones are dropped

CLOSED_BY_REASON = {"client_closed": "client", "server_closed": "server"}
_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class CorrelatorLimits:
    """Bounds on memory and on how long the correlator waits for missing records."""

    max_buffered_records: int = 262_144  # reorder window capacity
    max_connections: int = 65_536
    max_records_per_connection: int = 4_096  # unattributed reads / writes each
    max_pending_per_connection: int = 1_024  # requests waiting for their writes
    max_unjoined_accepts: int = 65_536
    send_settle_ns: int = 200 * MS  # wait for late writes of a response (no backpressure)
    drain_timeout_ns: int = 60_000 * MS  # ... when the socket buffer was full
    close_linger_ns: int = 5_000 * MS  # keep a closed connection for late hook records
    idle_timeout_ns: int = 600_000 * MS  # forget a connection silent for this long


@dataclass(slots=True)
class CorrelatorStats:
    """Counters: what went in, what came out, and what was dropped or matched nothing."""

    records_fed: int = 0
    kernel_records: int = 0
    hook_records: int = 0
    requests_emitted: int = 0
    incomplete_requests: int = 0
    late_records: int = 0  # arrived after the reorder window had passed them
    forced_releases: int = 0  # released early because the reorder window was full
    evicted_connections: int = 0
    evicted_requests: int = 0  # emitted before their records were complete (limits)
    evicted_records: int = 0  # reads/writes/accepts dropped by per-connection bounds
    unmatched_recvs: int = 0  # reads with data that no request claimed
    unmatched_sends: int = 0  # writes that no response claimed
    unmatched_hooks: int = 0  # requests whose connection was never opened in a hook
    unmatched_kernel_events: int = 0  # state/retransmit/reset/drop on unknown sockets
    lost_records: int = 0  # reported by note_lost_records
    connections: int = 0  # open now
    buffered_records: int = 0  # in the reorder window now

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def record_time(record: FeedRecord) -> int:
    """The timestamp a record is ordered by in the reorder window."""
    if isinstance(record, RequestTiming):
        return timing_sort_key(record)
    return record.ts_ns


def timing_sort_key(timing: RequestTiming) -> int:
    """When a RequestTiming was emitted: its latest timestamp (the cycle ended then)."""
    last_chunk = timing.chunks[-1][0] if timing.chunks else 0
    return max(*request_stamps(timing), last_chunk)


Deadline = tuple[int, int, Connection, RequestEvidence | None]


class Correlator:
    """Joins kernel and hook records into `RequestTrace`s (see the module docstring)."""

    def __init__(
        self,
        reorder_window_ns: int = DEFAULT_REORDER_WINDOW_NS,
        limits: CorrelatorLimits | None = None,
        poll_functions: Mapping[str, str] | None = None,
    ) -> None:
        """`poll_functions`: interface -> the NIC driver's poll function the probes attach
        there (ProbePlan.driver_poll_functions()), to name it in the softirq's details."""
        self.limits = limits or CorrelatorLimits()
        self._poll_functions: dict[str, str] = dict(poll_functions or {})
        self._max_records = self.limits.max_records_per_connection
        self._counts = CorrelatorStats()  # the counters not kept elsewhere (see `stats`)
        self._records_fed = 0
        self._hook_records = 0
        self._lost_records = 0
        self._window: ReorderBuffer[FeedRecord] = ReorderBuffer(
            reorder_window_ns, self.limits.max_buffered_records
        )
        self._push = self._window.push
        self._table = ConnectionTable(
            self.limits.max_connections, self.limits.max_unjoined_accepts, self._evict
        )
        self._by_sock = self._table.by_sock  # its indexes, read on the hot path
        self._by_hook = self._table.by_hook
        self._deadlines: list[Deadline] = []
        self._compact_deadlines_at = MIN_DEADLINES_COMPACTION
        self._deadline_serial = 0
        self._lost_reports: deque[tuple[int, int]] = deque(maxlen=64)
        self._out: list[RequestTrace] = []
        self._next_trace_id = 1
        self._loop = LoopHistory()  # who held each event loop, for the loop-wait stages
        self._serving_since: dict[int, int] = {}  # server pid -> when it began to accept
        self._since_sweep = 0  # records processed since the last idle sweep
        # One handler per record type (a dict lookup: the cheapest dispatch in the hot path).
        self._handlers: dict[type, Callable[[Any, int], None]] = {
            RecvRecord: self._on_recv,
            SendRecord: self._on_send,
            AcceptRecord: self._on_accept,
            StateRecord: self._on_state,
            RetransmitRecord: self._on_retransmit,
            ResetRecord: self._on_reset,
            DropRecord: self._on_drop,
            ConnectionOpened: self._on_opened,
            RequestTiming: self._on_request,
            ConnectionClosed: self._on_closed,
            ServerStarted: self._on_started,
        }
        # Per record type: whether it is a hook record (counted apart); other types are refused.
        hooks = HOOK_RECORD_TYPES
        self._is_hook: dict[type, bool] = {kind: kind in hooks for kind in self._handlers}

    # ---- public API -------------------------------------------------------------------

    def feed(self, record: FeedRecord) -> list[RequestTrace]:
        """Take one record (kernel or hook); return the requests it allowed to complete."""
        if isinstance(record, RequestTiming):
            self._hook_records += 1
            ts = timing_sort_key(record)
        else:
            is_hook = self._is_hook.get(type(record))
            if is_hook is None:
                raise TypeError(f"cannot correlate a {type(record).__name__}")
            if is_hook:
                self._hook_records += 1
            ts = record.ts_ns
        self._records_fed += 1
        released = self._push(ts, record)
        if released:
            self._process(released)
        if self._deadlines and self._deadlines[0][0] <= self._window.watermark:
            self._expire(self._window.watermark)
        if self._out:
            out, self._out = self._out, []
            return out
        return []

    def advance(self, now_ns: int) -> list[RequestTrace]:
        """Let time pass without a record (live runs call this with the monotonic clock)."""
        self._process(self._window.advance(now_ns))
        self._expire(self._window.watermark)
        out, self._out = self._out, []
        return out

    def note_lost_records(self, count: int) -> None:
        """The ring buffer lost `count` records: requests in flight now get a note."""
        if count <= 0:
            return
        self._lost_records += count
        self._lost_reports.append((self._window.max_seen, count))

    def flush(self) -> list[RequestTrace]:
        """End of stream: process everything held and finish every request still open."""
        self._process(self._window.drain())
        for connection in self._table:
            reason = "the record stream ended before the response was complete"
            self._retire(connection, reason, evicted=False)
        self._deadlines.clear()
        out, self._out = self._out, []
        return out

    @property
    def stats(self) -> CorrelatorStats:
        """The counters, as of now (a fresh snapshot on each access)."""
        counts = self._counts
        window = self._window
        return CorrelatorStats(
            records_fed=self._records_fed,
            kernel_records=self._records_fed - self._hook_records,
            hook_records=self._hook_records,
            requests_emitted=self._next_trace_id - 1,
            incomplete_requests=counts.incomplete_requests,
            late_records=window.late,
            forced_releases=window.forced,
            evicted_connections=counts.evicted_connections,
            evicted_requests=counts.evicted_requests,
            evicted_records=counts.evicted_records,
            unmatched_recvs=counts.unmatched_recvs,
            unmatched_sends=counts.unmatched_sends,
            unmatched_hooks=counts.unmatched_hooks,
            unmatched_kernel_events=counts.unmatched_kernel_events,
            lost_records=self._lost_records,
            connections=len(self._table),
            buffered_records=len(window),
        )

    def footprint(self) -> dict[str, int]:
        """How much state is held now (to check the bounds; walks every connection)."""
        connections = list(self._table)
        return {
            "connections": len(connections),
            "buffered_records": len(self._window),
            "unjoined_accepts": self._table.unjoined_accepts,
            "deadlines": len(self._deadlines),
            "held_reads": sum(len(c.recvs) for c in connections),
            "held_writes": sum(len(c.sends) for c in connections),
            "max_held_reads": max((len(c.recvs) for c in connections), default=0),
            "max_held_writes": max((len(c.sends) for c in connections), default=0),
            "max_pending_requests": max((len(c.pending) for c in connections), default=0),
        }

    # ---- the loop --------------------------------------------------------------------------

    def _process(self, entries: Sequence[tuple[int, int, FeedRecord]]) -> None:
        """Apply released records to the state machine, in time order."""
        handlers = self._handlers
        for ts, _, record in entries:
            handlers[type(record)](record, ts)
        self._since_sweep += len(entries)
        if self._since_sweep >= SWEEP_EVERY and self._since_sweep >= len(self._table):
            self._sweep(self._window.watermark)

    # ---- kernel records --------------------------------------------------------------------

    def _on_recv(self, record: RecvRecord, ts: int) -> None:
        sock = record.sock
        connection = self._by_sock.get((sock.sk, sock.raddr, sock.rport))  # sock_key
        if connection is None:  # a new socket (what for_socket does with a known one)
            connection = self._table.for_socket(sock, ts)
        connection.last_activity_ns = ts
        pid, fd = record.pid, record.fd
        if connection.fd != fd or connection.pid != pid:
            self._table.bind_fd(connection, pid, fd)
        ret = record.ret
        if ret > 0:
            dropped = connection.add_recv(record, self._max_records)
            if dropped:
                self._counts.evicted_records += dropped
        elif ret == 0 and not connection.closed_by:
            connection.closed_by = "client"  # end of file: the client shut its side

    def _on_send(self, record: SendRecord, ts: int) -> None:
        sock = record.sock
        connection = self._by_sock.get((sock.sk, sock.raddr, sock.rport))  # sock_key
        if connection is None:  # a new socket (what for_socket does with a known one)
            connection = self._table.for_socket(sock, ts)
        connection.last_activity_ns = ts
        pid, fd = record.pid, record.fd
        if connection.fd != fd or connection.pid != pid:
            self._table.bind_fd(connection, pid, fd)
        dropped = connection.add_send(record, self._max_records)
        if dropped:
            self._counts.evicted_records += dropped
        if connection.pending:
            self._attribute_sends(connection)

    def _on_accept(self, record: AcceptRecord, ts: int) -> None:
        if record.fd >= 0:
            self._counts.evicted_records += self._table.add_accept(record)

    def _on_state(self, record: StateRecord, ts: int) -> None:
        connection = self._table.change_state(record)
        if connection is None:
            self._counts.unmatched_kernel_events += 1
        elif record.newstate == TCP_CLOSE:
            # No write can follow the socket's end: what a response still misses is lost.
            while connection.pending:
                self._emit(connection, connection.pending.pop(0))
            self._maybe_linger(connection, record.ts_ns)

    def _on_event(self, sock: SocketId, ts_ns: int, kind: str) -> None:
        known = self._table.known_socket(sock)
        if known is None:
            self._counts.unmatched_kernel_events += 1
        else:
            known.add_event(ts_ns, kind)

    def _on_retransmit(self, record: RetransmitRecord, ts: int) -> None:
        self._on_event(record.sock, record.ts_ns, RETRANSMIT)

    def _on_reset(self, record: ResetRecord, ts: int) -> None:
        self._on_event(record.sock, record.ts_ns, RESET)

    def _on_drop(self, record: DropRecord, ts: int) -> None:
        self._on_event(record.sock, record.ts_ns, DROP)

    # ---- hook records ------------------------------------------------------------------------

    def _on_opened(self, record: ConnectionOpened, ts: int) -> None:
        self._table.open_from_hook(record)

    def _on_request(self, timing: RequestTiming, ts: int) -> None:
        connection = self._by_hook.get((timing.pid, timing.conn_id))  # for_hook
        if connection is None:
            self._counts.unmatched_hooks += 1
            connection = self._table.adopt_for_hook(timing, ts)
        if ts > connection.last_activity_ns:
            connection.last_activity_ns = ts
        seq = timing.seq
        if seq == connection.next_seq and not connection.seqs_ahead:
            connection.next_seq = seq + 1  # the next in order (what note_seq does then)
        else:
            connection.note_seq(seq)
        evidence = RequestEvidence(timing, ts)
        evidence.unix = connection.unix
        if connection.sock is not None:
            evidence.kernel_traced = True
        else:
            evidence.bytes_left = 0  # no kernel side: no write will ever be seen
        forgotten = connection.claim_recvs(evidence)
        if forgotten:
            self._counts.unmatched_recvs += forgotten
        pending = connection.pending
        if not pending or pending[-1].timing.seq < seq:
            pending.append(evidence)
        else:  # hooks out of seq order (a background task kept an earlier cycle open)
            at = next(i for i, ev in enumerate(pending) if ev.timing.seq > seq)
            pending.insert(at, evidence)
        if len(pending) > self.limits.max_pending_per_connection:
            oldest = pending.pop(0)
            oldest.cut_short = "evicted: too many requests waiting on this connection"
            self._counts.evicted_requests += 1
            self._emit(connection, oldest)
        self._attribute_sends(connection)
        if pending and pending[0].first_chunk_ns and not connection.seqs_ahead:
            self._counts.unmatched_sends += connection.drop_sends_before(pending[0].first_chunk_ns)
        if evidence.bytes_left > 0 and evidence.deadline_ns != EMITTED:  # still pending
            wait = self.limits.send_settle_ns
            if evidence.backpressured:
                wait = self.limits.drain_timeout_ns
            self._schedule(connection, evidence, ts + wait)

    def _on_started(self, record: ServerStarted, ts: int) -> None:
        self._serving_since[record.pid] = record.ts_ns

    def _on_closed(self, record: ConnectionClosed, ts: int) -> None:
        connection = self._table.for_hook(record.pid, record.conn_id)
        if connection is None:
            return
        connection.hook_closed = True
        connection.requests_expected = record.requests
        if not connection.closed_by:
            connection.closed_by = CLOSED_BY_REASON.get(record.reason, "")
        self._maybe_linger(connection, record.ts_ns)

    # ---- requests: writes, deadlines, emission ------------------------------------------------

    def _attribute_sends(self, connection: Connection) -> None:
        pending = connection.pending
        sends = connection.sends
        # A response can only take writes that began at or after its first chunk: when the
        # latest write began before that, take_sends would find nothing (under record loss
        # many responses wait here for writes that never come; asking each of them on
        # every record made this loop the correlator's largest cost).
        # Nor when, not draining, the first write at or after its first chunk began at or
        # after the next response's first chunk (take_sends would stop there at once).
        # Both checks are exactly take_sends' own first steps, without the call.
        last_enter = sends[-1].enter_ts if sends else -1
        i = 0
        while i < len(pending):
            evidence = pending[i]
            first_chunk = evidence.first_chunk_ns
            if evidence.bytes_left > 0 and first_chunk <= last_enter:
                next_first_chunk = pending[i + 1].first_chunk_ns if i + 1 < len(pending) else 0
                if (
                    evidence.backpressured
                    or not next_first_chunk
                    or sends[bisect_left(sends, first_chunk, key=WRITE_START)].enter_ts
                    < next_first_chunk
                ):
                    connection.take_sends(evidence, next_first_chunk)
                    last_enter = sends[-1].enter_ts if sends else -1
            if evidence.bytes_left <= 0:
                del pending[i]
                self._emit(connection, evidence)
            else:
                i += 1

    def _schedule(self, connection: Connection, evidence: RequestEvidence | None, at: int) -> None:
        """Look at this request (or, with None, this closed connection) again at `at`."""
        self._deadline_serial += 1
        if evidence is not None:
            evidence.deadline_ns = at
        deadlines = self._deadlines
        heapq.heappush(deadlines, (at, self._deadline_serial, connection, evidence))
        if len(deadlines) > self._compact_deadlines_at:
            # Entries of requests emitted early stay until their time: drop them in bulk.
            deadlines[:] = [entry for entry in deadlines if self._deadline_live(entry)]
            heapq.heapify(deadlines)
            self._compact_deadlines_at = max(MIN_DEADLINES_COMPACTION, 2 * len(deadlines))

    def _deadline_live(self, entry: Deadline) -> bool:
        at, _, connection, evidence = entry
        if connection not in self._table:
            return False
        if evidence is None:
            return connection.close_deadline_ns == at
        return evidence.deadline_ns == at  # EMITTED once it left pending (never a time)

    def _expire(self, now: int) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            at, _, connection, evidence = heapq.heappop(deadlines)
            if not self._deadline_live((at, 0, connection, evidence)):
                continue  # already emitted or retired, or rescheduled
            if evidence is None:
                reason = "the connection closed before the response was seen"
                self._retire(connection, reason, evicted=True)
                continue
            drain_deadline = evidence.sort_ts + self.limits.drain_timeout_ns
            if evidence.backpressured and at < drain_deadline:
                self._schedule(connection, evidence, drain_deadline)
                continue
            if evidence.backpressured:
                evidence.cut_short = "send: the response was still draining at the drain timeout"
            connection.pending.remove(evidence)
            self._emit(connection, evidence)

    def _emit(self, connection: Connection, evidence: RequestEvidence) -> None:
        """Build and queue the trace of a request that just left `connection.pending`."""
        evidence.deadline_ns = EMITTED  # its deadline entries are dead (see _deadline_live)
        connection.emitted += 1
        timing = evidence.timing
        start, end, stages, notes, details, complete = build_timeline(
            evidence, self._serving_since.get(timing.pid, 0), self._poll_functions
        )
        if connection.events:
            details.update(connection.events_between(start, end))
        if self._lost_reports:
            lost = sum(count for mark, count in self._lost_reports if mark >= start)
            if lost:
                notes += (
                    f"possibly incomplete: the ring buffer lost {lost} records while this"
                    " request was in flight",
                )
        if not complete:
            self._counts.incomplete_requests += 1
        trace_id = self._next_trace_id
        loop = self._loop
        blame = loop.blame(trace_id, timing, stages, LOOP_WAIT_STAGES) if timing.tid else ()
        loop.add(trace_id, timing)
        # tuple.__new__ with every field in order: the cheapest way to build a named tuple
        # (this runs once per request; keyword passing costs measurably more).
        self._out.append(
            _new(
                RequestTrace,
                (
                    trace_id,
                    timing.pid,
                    timing.fd,
                    timing.conn_id,
                    timing.seq,
                    timing.method,
                    timing.path,
                    timing.status,
                    connection.client,
                    connection.server,
                    start,
                    end,
                    complete,
                    stages,
                    notes,
                    connection.facts(),
                    details,
                    timing.tid,
                    timing.query,
                    timing.http_version,
                    timing.outcome,
                    timing.headers,
                    blame,
                ),
            )
        )
        self._next_trace_id += 1

    # ---- the end of connections -----------------------------------------------------------

    def _maybe_linger(self, connection: Connection, ts_ns: int) -> None:
        """Both sides closed: keep the connection briefly for late records, then retire it."""
        kernel_done = connection.kernel_closed or connection.sock is None
        hook_done = connection.hook_closed or connection.conn_id == 0
        if kernel_done and hook_done and not connection.close_deadline_ns:
            connection.close_deadline_ns = ts_ns + self.limits.close_linger_ns
            self._schedule(connection, None, connection.close_deadline_ns)

    def _retire(self, connection: Connection, reason: str, *, evicted: bool) -> None:
        """Forget a connection; finish its waiting requests first (marked cut short)."""
        if evicted and not connection.finished():
            self._counts.evicted_connections += 1
        while connection.pending:
            evidence = connection.pending.pop(0)
            if evidence.backpressured or not evidence.sends:
                evidence.cut_short = f"send: {reason}"
            self._emit(connection, evidence)
        counts = self._counts
        counts.unmatched_recvs += connection.unclaimed_reads()
        counts.unmatched_sends += connection.unattributed_writes()
        self._table.remove(connection)

    def _sweep(self, now: int) -> None:
        """Retire connections silent for longer than the idle timeout."""
        self._since_sweep = 0
        for connection in self._table.idle_since(now - self.limits.idle_timeout_ns):
            self._retire(connection, "the connection went idle", evicted=True)

    def _evict(self, connections: list[Connection]) -> None:
        """The table is full: retire these (its least recently active) to make room."""
        for connection in connections:
            self._retire(connection, "evicted at the connection limit", evicted=True)
