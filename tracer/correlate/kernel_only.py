"""Requests delimited from kernel records alone: `reqtrace attach`, a server without hooks.

    correlator = KernelOnlyCorrelator()        # the Correlator's API: feed, advance,
    for record in records:                     # note_lost_records, flush, stats
        for trace in correlator.feed(record):
            sink(trace)

Theory of operation
-------------------
Sans-IO like correlator.py (no BPF, no threads, no clock), and built from its pieces: the
reorder window, the connection table (identity, handshake, accept queue, close, counters)
and the receive-path stages of stage_builder.py. What a server's hooks tell in `reqtrace
run` (where a request begins, what it was, when the app ran) is read here from the
conversation on the connection, HTTP/1.x being strictly turn by turn:

    (new connection) --recv with data--> reading --send with data--> answering
                     <------------- recv with data: the next request ---

1. A request begins at the first read with data on a connection, and at the first read with
   data after a send with data. The probes copied that read's first bytes
   (RT_REC_RECV_HEAD, probes/events.h): its request line gives method, path, query and
   HTTP version (request_line.py).
2. Further reads before the response's first send are the same request's (a request line
   and headers in several segments, an upload).
3. Sends until the next request begins are its response (a large one takes many); the
   first one's captured status line (RT_REC_SEND_HEAD) gives the status.
   An interim answer ("HTTP/1.1 100 Continue") does not end the request: the body read
   after it is still the request's, and the answer proper starts at the next send.
4. A request is emitted when the next one begins, when its connection closes, or once no
   send came for `send_settle_ns` after its last one (`drain_timeout_ns` after a full
   socket buffer). Sends that come later, before another read, are counted as unmatched.

Stages (tracer/model/stages.py): the receive path, wakeup and event-loop stages of the
first read, as with hooks; `recv` (that read's enter → exit; a thread already blocked in
recv when the data came, thread-per-connection servers, counts from the data's arrival and
its wakeup is inside); `server`, from the last read's exit to the response's first send
(the server's own work: parsing, the app, whatever it does before answering); `send`,
from the first send's enter to the last send's exit. The stages that need the server's
hooks (parse, body, the loop queue, app, handoff) are absent, and every trace says why in
a note. Pipelined requests that arrive in one read are one turn here: a note counts the
request lines seen in the captured bytes.

Bounded like the correlator: connections (least recently active evicted), the reorder
window, idle connections swept; a request keeps aggregates of its reads and sends, not
the records.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracer.correlate.connection import DROP, RESET, RETRANSMIT, Connection
from tracer.correlate.connection_table import TCP_CLOSE, ConnectionTable
from tracer.correlate.correlator import (
    DEFAULT_REORDER_WINDOW_NS,
    SWEEP_EVERY,
    CorrelatorLimits,
    CorrelatorStats,
    FeedRecord,
)
from tracer.correlate.reorder import ReorderBuffer
from tracer.correlate.request_line import parse_request_head, parse_status
from tracer.correlate.stage_builder import (
    EAGAIN,
    NO_POLL_FUNCTIONS,
    _chain,
    _kernel_stages,
    _tile,
)
from tracer.model.stages import RX_PATH_STAGES, SERVER, SYSCALL
from tracer.model.trace import Detail, RequestTrace, Stage
from tracer.records.kernel import (
    AcceptRecord,
    DropRecord,
    KernelRecord,
    RecvRecord,
    ResetRecord,
    RetransmitRecord,
    SendRecord,
    StateRecord,
)

HOOK_STAGES = "parse, body, pipeline_wait, loop_queue, app, handoff, startup"
HOOKLESS_MARK = "not observable without reqtrace's hooks in the server"  # the notes' reason
ATTACH_NOTE = (
    f"{HOOK_STAGES}: {HOOKLESS_MARK}: only its syscalls and the kernel are seen (attach"
    " mode, or a server reqtrace could not hook); the server stage is its time between the"
    " last read and the first send, which `reqtrace run` with hooks splits into them"
)
BLOCKING_NOTE = (
    "wakeup, event_loop: the server thread was already blocked in recv when the data came"
    " (blocking I/O, e.g. a thread per connection): its wakeup is inside the recv stage,"
    " counted from the data's arrival"
)
NO_LOOP_NOTE = (
    "event_loop: the reading thread waited in no epoll call (a thread per connection, or"
    " blocking I/O): the data sat in the socket buffer until the server read it"
)
NO_RESPONSE_NOTE = (
    "server, send: no response was sent on this connection before it closed or tracing"
    " ended (or its send records were lost)"
)
RECEIVE_PATH = frozenset(RX_PATH_STAGES) - {"wakeup", "event_loop"}
KERNEL_RECORD_TYPES = (
    RecvRecord,
    SendRecord,
    AcceptRecord,
    StateRecord,
    RetransmitRecord,
    ResetRecord,
    DropRecord,
)
_new = tuple.__new__


class Turn:
    """One request as the conversation shows it: aggregates of its reads and sends."""

    __slots__ = (
        "answered",
        "backpressured",
        "deadline_ns",
        "eagain",
        "first_recv",
        "first_send",
        "last_recv",
        "last_send_exit",
        "prev_recv",
        "recv_bytes",
        "recv_calls",
        "recv_time_ns",
        "segments",
        "send_bytes",
        "send_calls",
        "send_time_ns",
        "seq",
        "status_head",
        "xmits",
    )

    def __init__(self, first: RecvRecord, previous: RecvRecord | None, seq: int) -> None:
        self.seq = seq
        self.first_recv = first
        self.last_recv = first
        self.prev_recv = previous  # the connection's read before this request's first
        self.recv_calls = 1
        self.recv_bytes = first.ret
        self.recv_time_ns = first.ts_ns - first.enter_ts
        self.segments = first.rx.segments if first.rx is not None else 0
        self.first_send: SendRecord | None = None
        self.last_send_exit = 0
        self.answered = False  # a send with data came: the next read starts another request
        self.send_calls = 0
        self.send_bytes = 0
        self.send_time_ns = 0
        self.xmits = 0
        self.eagain = 0
        self.backpressured = False
        self.status_head = b""
        self.deadline_ns = 0

    def add_recv(self, record: RecvRecord) -> None:
        # A read after an interim answer ("100 Continue"): the answer proper comes later.
        self.first_send = None
        self.last_recv = record
        self.recv_calls += 1
        self.recv_bytes += record.ret
        self.recv_time_ns += record.ts_ns - record.enter_ts
        if record.rx is not None:
            self.segments += record.rx.segments

    def add_send(self, record: SendRecord) -> None:
        if self.first_send is None:
            self.first_send = record
        if record.ts_ns > self.last_send_exit:
            self.last_send_exit = record.ts_ns
        self.send_calls += 1
        self.send_time_ns += record.ts_ns - record.enter_ts
        self.xmits += record.xmit_count
        ret = record.ret
        if ret > 0:
            self.send_bytes += ret
            head = record.head
            interim = 100 <= parse_status(head) < 200  # "100 Continue": the request goes on
            if not interim:
                self.answered = True
            if head and (not self.status_head or 100 <= parse_status(self.status_head) < 200):
                self.status_head = head
        elif ret == -EAGAIN:
            self.eagain += 1
            self.backpressured = True


Timeline = tuple[int, int, tuple[Stage, ...], tuple[str, ...], dict[str, Detail], bool]


def build_turn_timeline(
    turn: Turn, poll_functions: Mapping[str, str] = NO_POLL_FUNCTIONS
) -> Timeline:
    """Stages, notes, details and completeness of one request from its turn (pure).

    `poll_functions`: interface -> the NIC driver's poll function the probes attach there."""
    notes: list[str] = []
    details: dict[str, Detail] = {}
    candidates: list[Stage] = []
    first = turn.first_recv
    start, complete, _ = _kernel_stages(
        first, turn.prev_recv, candidates, notes, details, 0, poll_functions
    )
    recv_start, recv_exit = first.enter_ts, first.ts_ns
    rx = first.rx
    arrived = 0
    if rx is not None:
        arrived = rx.data_ready_ts or rx.tcp_ts
        if arrived > recv_exit:
            arrived = 0
    if arrived and recv_start < arrived:  # blocked in recv: no epoll wait, no event loop
        candidates[:] = [stage for stage in candidates if stage.name in RECEIVE_PATH]
        notes[:] = [note for note in notes if not note.startswith(("wakeup:", "event_loop:"))]
        notes.append(BLOCKING_NOTE)
        details["recv_blocked_us"] = (arrived - recv_start) / 1000
        recv_start = arrived
    elif not 0 < first.epoll_exit_ts <= recv_start:  # read without any epoll wait before it
        candidates[:] = [stage for stage in candidates if stage.name != "event_loop"]
        notes[:] = [note for note in notes if not note.startswith("event_loop:")]
        notes.append(NO_LOOP_NOTE)
    candidates.append(_new(Stage, ("recv", SYSCALL, recv_start, recv_exit)))
    if not start or recv_start < start:
        start = recv_start
    details["recv_calls"] = turn.recv_calls
    details["recv_bytes"] = turn.recv_bytes
    details["recv_time_us"] = turn.recv_time_ns / 1000
    details["segments"] = turn.segments
    last_read = turn.last_recv.ts_ns
    if turn.recv_calls > 1:
        notes.append(
            f"parse, body: the request came in {turn.recv_calls} reads; from the first to the"
            " last the server was waiting for the rest of it and reading it (no hook says when"
            " its headers were parsed)"
        )
    first_send = turn.first_send
    end = last_read
    if first_send is not None:
        candidates.append(_new(Stage, ("server", SERVER, last_read, first_send.enter_ts)))
        candidates.append(_new(Stage, ("send", SYSCALL, first_send.enter_ts, turn.last_send_exit)))
        end = turn.last_send_exit
        details["send_calls"] = turn.send_calls
        details["send_bytes"] = turn.send_bytes
        details["send_time_us"] = turn.send_time_ns / 1000
        details["xmit_count"] = turn.xmits
        details["response_bytes"] = turn.send_bytes
        if turn.eagain:
            details["eagain"] = turn.eagain
        if first_send.dev:
            details["tx_dev"] = first_send.dev
    if not turn.answered:
        notes.append(NO_RESPONSE_NOTE)
        complete = False
    notes.append(ATTACH_NOTE)
    stages = _chain(candidates, notes)
    if stages:
        start = min(start, stages[0].start_ns)
        end = max(end, stages[-1].end_ns)
    return start, end, _tile(start, end, stages, notes), tuple(notes), details, complete


Deadline = tuple[int, int, Connection, Turn]


class KernelOnlyCorrelator:
    """Request traces from kernel records alone (see the module docstring)."""

    def __init__(
        self,
        reorder_window_ns: int = DEFAULT_REORDER_WINDOW_NS,
        limits: CorrelatorLimits | None = None,
        poll_functions: Mapping[str, str] | None = None,
    ) -> None:
        """`poll_functions`: as for the Correlator (ProbePlan.driver_poll_functions())."""
        self.limits = limits or CorrelatorLimits()
        self._poll_functions: dict[str, str] = dict(poll_functions or {})
        self._counts = CorrelatorStats()
        self._window: ReorderBuffer[KernelRecord] = ReorderBuffer(
            reorder_window_ns, self.limits.max_buffered_records
        )
        self._table = ConnectionTable(
            self.limits.max_connections, self.limits.max_unjoined_accepts, self._evict
        )
        self._turns: dict[int, Turn] = {}  # connection serial -> its request in progress
        self._last_read: dict[int, RecvRecord] = {}  # connection serial -> its latest read
        self._turns_begun: dict[int, int] = {}  # connection serial -> requests begun on it
        self._deadlines: list[Deadline] = []
        self._deadline_serial = 0
        self._lost_marks: list[tuple[int, int]] = []
        self._out: list[RequestTrace] = []
        self._next_trace_id = 1
        self._since_sweep = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            RecvRecord: self._on_recv,
            SendRecord: self._on_send,
            AcceptRecord: self._on_accept,
            StateRecord: self._on_state,
            RetransmitRecord: self._on_retransmit,
            ResetRecord: self._on_reset,
            DropRecord: self._on_drop,
        }

    # ---- public API (the Correlator's) ---------------------------------------------------

    def feed(self, record: FeedRecord) -> list[RequestTrace]:
        """Take one kernel record; return the requests it allowed to complete.

        Hook records have no place here (a server with hooks is traced by `Correlator`)."""
        if not isinstance(record, KERNEL_RECORD_TYPES):
            name = type(record).__name__
            raise TypeError(f"attach mode correlates kernel records only, not a {name}")
        self._counts.records_fed += 1
        self._counts.kernel_records += 1
        released = self._window.push(record.ts_ns, record)
        if released:
            self._process(released)
        self._expire(self._window.watermark)
        out, self._out = self._out, []
        return out

    def advance(self, now_ns: int) -> list[RequestTrace]:
        """Let time pass without a record (live runs call this with the monotonic clock)."""
        self._process(self._window.advance(now_ns))
        self._expire(self._window.watermark)
        out, self._out = self._out, []
        return out

    def note_lost_records(self, count: int) -> None:
        """The ring buffer lost `count` records: requests in flight now get a note."""
        if count > 0:
            self._counts.lost_records += count
            self._lost_marks.append((self._window.max_seen, count))
            del self._lost_marks[:-64]

    def flush(self) -> list[RequestTrace]:
        """End of stream: process everything held and finish every request still open."""
        self._process(self._window.drain())
        for connection in self._table:
            self._retire(connection)
        self._deadlines.clear()
        out, self._out = self._out, []
        return out

    @property
    def stats(self) -> CorrelatorStats:
        counts = self._counts
        return CorrelatorStats(
            records_fed=counts.records_fed,
            kernel_records=counts.kernel_records,
            requests_emitted=self._next_trace_id - 1,
            incomplete_requests=counts.incomplete_requests,
            late_records=self._window.late,
            forced_releases=self._window.forced,
            evicted_connections=counts.evicted_connections,
            evicted_requests=counts.evicted_requests,
            unmatched_recvs=counts.unmatched_recvs,
            unmatched_sends=counts.unmatched_sends,
            unmatched_kernel_events=counts.unmatched_kernel_events,
            lost_records=counts.lost_records,
            connections=len(self._table),
            buffered_records=len(self._window),
        )

    # ---- the loop ----------------------------------------------------------------------

    def _process(self, entries: Sequence[tuple[int, int, KernelRecord]]) -> None:
        handlers = self._handlers
        for _, _, record in entries:
            handlers[type(record)](record)
        self._since_sweep += len(entries)
        if self._since_sweep >= SWEEP_EVERY and self._since_sweep >= len(self._table):
            self._since_sweep = 0
            cutoff = self._window.watermark - self.limits.idle_timeout_ns
            for connection in self._table.idle_since(cutoff):
                if connection.serial in self._turns:
                    self._counts.evicted_connections += 1
                self._retire(connection)

    def _connection(self, record: RecvRecord | SendRecord) -> Connection:
        sock = record.sock
        connection = self._table.known_socket(sock)
        if connection is None:
            connection = self._table.for_socket(sock, record.ts_ns)
        connection.last_activity_ns = record.ts_ns
        if connection.fd != record.fd or connection.pid != record.pid:
            self._table.bind_fd(connection, record.pid, record.fd)
        if not connection.tid:
            connection.tid = record.tid
        return connection

    def _on_recv(self, record: RecvRecord) -> None:
        connection = self._connection(record)
        serial = connection.serial
        if record.ret <= 0:
            if record.ret == 0 and not connection.closed_by:
                connection.closed_by = "client"  # end of file: the client shut its side
            return
        if record.rx is not None:
            connection.last_rx = record.rx
        turn = self._turns.get(serial)
        if turn is not None and not turn.answered:
            turn.add_recv(record)
        else:
            if turn is not None:
                self._emit(connection, turn)
            begun = self._turns_begun.get(serial, 0) + 1
            self._turns_begun[serial] = begun
            self._turns[serial] = Turn(record, self._last_read.get(serial), begun)
        self._last_read[serial] = record

    def _on_send(self, record: SendRecord) -> None:
        connection = self._connection(record)
        turn = self._turns.get(connection.serial)
        if turn is None:  # the answer to a request read before tracing, or after a settle
            if record.ret > 0:
                self._counts.unmatched_sends += 1
            return
        turn.add_send(record)
        wait = self.limits.drain_timeout_ns if turn.backpressured else self.limits.send_settle_ns
        self._schedule(connection, turn, record.ts_ns + wait)

    def _on_accept(self, record: AcceptRecord) -> None:
        if record.fd >= 0:
            self._counts.evicted_records += self._table.add_accept(record)

    def _on_state(self, record: StateRecord) -> None:
        connection = self._table.change_state(record)
        if connection is None:
            self._counts.unmatched_kernel_events += 1
        elif record.newstate == TCP_CLOSE:
            self._retire(connection)  # no write can follow the socket's end

    def _on_event(self, record: RetransmitRecord | ResetRecord | DropRecord, kind: str) -> None:
        known = self._table.known_socket(record.sock)
        if known is None:
            self._counts.unmatched_kernel_events += 1
        else:
            known.add_event(record.ts_ns, kind)

    def _on_retransmit(self, record: RetransmitRecord) -> None:
        self._on_event(record, RETRANSMIT)

    def _on_reset(self, record: ResetRecord) -> None:
        self._on_event(record, RESET)

    def _on_drop(self, record: DropRecord) -> None:
        self._on_event(record, DROP)

    # ---- deadlines and emission ----------------------------------------------------------

    def _schedule(self, connection: Connection, turn: Turn, at: int) -> None:
        turn.deadline_ns = at
        self._deadline_serial += 1
        heapq.heappush(self._deadlines, (at, self._deadline_serial, connection, turn))

    def _expire(self, now: int) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            at, _, connection, turn = heapq.heappop(deadlines)
            if turn.deadline_ns != at or self._turns.get(connection.serial) is not turn:
                continue  # rescheduled by a later send, or already emitted
            del self._turns[connection.serial]
            self._emit(connection, turn)

    def _retire(self, connection: Connection) -> None:
        """Forget a connection, emitting its request in progress first."""
        serial = connection.serial
        turn = self._turns.pop(serial, None)
        if turn is not None:
            self._emit(connection, turn)
        self._last_read.pop(serial, None)
        self._turns_begun.pop(serial, None)
        self._table.remove(connection)

    def _evict(self, connections: list[Connection]) -> None:
        """The table is full: its least recently active connections go."""
        for connection in connections:
            if connection.serial in self._turns:
                self._counts.evicted_requests += 1
            self._counts.evicted_connections += 1
            self._retire(connection)

    def _emit(self, connection: Connection, turn: Turn) -> None:
        """Build and queue the trace of a request that just left its connection."""
        turn.deadline_ns = -1
        connection.emitted += 1
        start, end, stages, notes, details, complete = build_turn_timeline(
            turn, self._poll_functions
        )
        first = turn.first_recv
        head = parse_request_head(first.head, first.ret)
        extra: list[str] = []
        if head.problem:
            extra.append(f"request line: {head.problem}")
        if head.requests_seen > 1:
            details["pipelined_requests"] = head.requests_seen
            extra.append(
                f"pipelined: the first read carried {head.requests_seen} request lines (the"
                " client sent them without waiting): without hooks, one request is seen per read"
                " and answer, so their responses are counted in this one"
            )
        if connection.events:
            details.update(connection.events_between(start, end))
        lost = sum(count for mark, count in self._lost_marks if mark >= start)
        if lost:
            extra.append(
                f"possibly incomplete: the ring buffer lost {lost} records while this request"
                " was in flight"
            )
        if not complete:
            self._counts.incomplete_requests += 1
        status = parse_status(turn.status_head)
        self._out.append(
            RequestTrace(
                id=self._next_trace_id,
                pid=first.pid,
                fd=first.fd,
                conn_id=connection.serial,
                seq=turn.seq,
                method=head.method,
                path=head.path,
                status=status,
                client=connection.client,
                server=connection.server,
                start_ns=start,
                end_ns=end,
                complete=complete,
                stages=stages,
                notes=(*notes, *extra),
                connection=connection.facts(),
                details=details,
                tid=first.tid,
                query=head.query,
                http_version=head.http_version,
                outcome="ok" if turn.answered else "no_response",
            )
        )
        self._next_trace_id += 1
