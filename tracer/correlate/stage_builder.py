"""Turn the evidence gathered for one request into its stages, notes and details.

Pure functions, no state: the correlator decides WHICH records belong to a request (see
correlator.py); this module decides WHAT they say about it.

Stage definitions (from → to; the registry in tracer/model/stages.py, refined here):

    nic_irq     rx.hardirq_ts → rx.softirq_entry_ts, only when NET_RX was raised by a
                hardirq (RT_RX_FROM_HARDIRQ). Never on lo/veth.
    backlog     rx.netif_rx_ts → rx.softirq_entry_ts: the packet waited on the CPU backlog
                (lo, veth). Only when queued by netif_rx and the softirq started after it.
    softirq     (rx.poll_start_ts or rx.softirq_entry_ts) → rx.netif_receive_ts; for a
                backlog packet it starts no earlier than netif_rx (a softirq already running
                when the packet was queued did not work on it before it existed).
    ip_tcp      rx.netif_receive_ts → rx.data_ready_ts (rx.tcp_ts when data_ready unseen).
    startup     rx.data_ready_ts → the server began to accept (ServerStarted hook), when the
                data came while the app was still starting (lifespan): the connection sat
                in the accept queue. loop_busy then starts there.
    loop_busy   rx.data_ready_ts → epoll_exit_ts when the loop thread entered that epoll
                wait only after the data was ready: it was running other work, not asleep
                (the correlator names the holders, loop_blame.py).
    wakeup      rx.data_ready_ts → epoll_exit_ts, when the loop's last epoll wait began
                before the data arrived (the thread slept). details: wake_path_us
                (data_ready → sched_wakeup) and run_queue_us (sched_wakeup → epoll return).
    event_loop  max(epoll_exit_ts, data_ready_ts) → recv enter.
    recv        enter → exit of the read that delivered the request's first bytes.
    pipeline_wait  pipelined requests: the earlier request's read exit → their first byte
                reached the parser (they waited behind it).
    parse       that read's exit → headers parsed (hook). Pipelined requests: from
                max(their first byte, that read's exit).
    body        headers parsed → request body complete (on_message_complete), for requests
                with a body: the upload crossing the network and the reads that took it in
                (their count and segments are in details: body_recv_calls, segments).
    app         app called (or, for a request with a body, the body complete, when that
                came later: until then the app was waiting for the network, which is the
                body stage; details: app_waited_for_body_us) → the final handoff: the
                last transport.write of the response (its chunk timestamp), or the app's
                return when that came first (the server then wrote the rest, e.g. an
                error page), or the app's return when nothing was written. Work after
                the handoff (background tasks) is in details as app_after_response_us,
                not in the stage.
    loop_queue  headers parsed (body complete, when the app was not running yet) → the app
                called: the app's task waited for the event loop (holders named).
    handoff     the final handoff → the first send syscall after it (the server's write
                path; queued writes under backpressure; holders named).
    send        the send syscalls that carry the response from the final handoff on:
                first enter → last exit (including writes drained later under
                backpressure). Sends inside the app interval (streaming) are details only.

The NIC/softirq times (nic_irq, backlog, softirq, ip_tcp) are joined in BPF by skb address;
when they cannot describe this segment (they predate the previous read, or reach TCP later
than one softirq run can last) those four stages are left out with a note, never shown.

Candidates are then chained in canonical order: a stage that would start before the
previous one ends is clipped to that end (with a note) or dropped when nothing is left, so
stages never overlap or go backwards whatever the input. Then every stretch of the total
that no stage covers becomes an explicit `unobserved` stage with a note saying why (the
note of a missing stage that belongs there, when there is one): the leaves tile the total.
The total runs from the first kernel timestamp of the request to the last send exit,
falling back to hook times (with a note) when kernel records are missing, and always
covers every stage.
"""

from __future__ import annotations

from collections.abc import Mapping

from tracer.model.stages import (
    APP,
    EVENT_LOOP,
    GAP,
    KERNEL,
    RX_PATH_STAGES,
    SERVER,
    STAGE_NAMES,
    SYSCALL,
)
from tracer.model.trace import Detail, Stage
from tracer.records.hooks import RequestTiming
from tracer.records.kernel import (
    RT_RX_BACKLOG,
    RT_RX_DRIVER_POLL,
    RT_RX_FROM_HARDIRQ,
    RT_RX_PROCESS_CONTEXT,
    RecvRecord,
    SendRecord,
)

EAGAIN = 11
_new = tuple.__new__  # builds a Stage from its fields in order (no keyword handling)
# The chain check (see _chain) as candidates are added: `cursor` is the end of the last
# candidate while they form a clean chain, DIRTY once one did not (then it stays DIRTY,
# since no timestamp is >= it), so a candidate (start, end) keeps the chain clean exactly
# when `cursor <= start <= end`.
DIRTY = 1 << 63  # later than any timestamp: an int, so the chain check stays in ints
# Longest a segment can spend from netif_receive_skb to TCP inside one NET_RX softirq run:
# net_rx_action stops after netdev_budget_usecs (2 ms by default); 10 ms leaves room for
# hardirqs and a raised budget. Longer means the times describe another packet.
MAX_SOFTIRQ_SPAN_NS = 10_000_000
KERNEL_STAGES = ", ".join(RX_PATH_STAGES)
PARSED = ("parse", "body")  # the stages after which the request waits for the app to run

NO_POLL_FUNCTIONS: Mapping[str, str] = {}
# The softirq's NAPI poll ran in a NIC driver's poll function the run did not name.
DRIVER_POLL_UNNAMED = "the NIC driver's poll function"

# Notes that do not depend on the request, built once.
NO_RX_NOTE = (
    f"{KERNEL_STAGES}: kernel receive path not observed (no data segment recorded on this"
    " socket since the previous read: sent before tracing started, or records lost)"
)
STALE_RX_NOTE = (
    f"{KERNEL_STAGES}: the receive path recorded predates the previous read (a retransmitted"
    " or duplicate segment), so it does not describe this request"
)
NIC_IRQ_NOT_RAISED = (
    "nic_irq: no hardware interrupt raised NET_RX for this packet (busy polling, or NET_RX"
    " already running)"
)
NIC_IRQ_UNSEEN = "nic_irq: hardirq or softirq entry time not observed"
BACKLOG_RUNNING = "backlog: the NET_RX softirq was already running when the packet was queued"
BACKLOG_UNSEEN = "backlog: netif_rx or softirq entry time not observed"
BACKLOG_NAPI = "backlog: not queued on a CPU backlog: the device's NAPI poll delivered it"
SOFTIRQ_UNSEEN = "softirq: NAPI poll start or netif_receive_skb not observed for this packet"
IP_TCP_UNSEEN = "ip_tcp: netif_receive_skb or the TCP segment not observed"
PROCESS_CONTEXT_NOTE = (
    "ip_tcp: TCP processed the segment later, from the socket backlog (a reader held the"
    " socket lock)"
)
WAKEUP_NO_READY = "wakeup: sk_data_ready not observed for this segment"
WAKEUP_NO_EPOLL = "wakeup: no epoll wait seen on this thread before the read"
WAKEUP_AWAKE = (
    "wakeup: the event loop read without waiting: its last epoll wait returned before the data"
)
STALE_SKB_NOTE = (
    "nic_irq, backlog, softirq, ip_tcp: the NIC and softirq times recorded for this segment"
    " belong to an earlier packet (a reused skb), so these stages are left out"
)
WAKEUP_BUSY = (
    "wakeup: the event loop was not asleep when the data arrived (it was running other work;"
    " see loop_busy)"
)
EVENT_LOOP_UNSEEN = "event_loop: neither the data's arrival nor an epoll return was observed"
_software_notes: dict[str, str] = {}


def _software_note(dev: str) -> str:
    note = _software_notes.get(dev)
    if note is None:
        note = f"nic_irq: no hardware interrupt: packet came from {dev} (software device)"
        if len(_software_notes) < 256:
            _software_notes[dev] = note
    return note


class RequestEvidence:
    """Everything the correlator attributed to one request (mutable while it gathers)."""

    __slots__ = (
        "backpressured",
        "bytes_left",
        "cut_short",
        "deadline_ns",
        "delivering_recv",
        "eagain",
        "first_chunk_ns",
        "first_recv",
        "handoff_ns",
        "kernel_traced",
        "pipelined_with",
        "prev_recv",
        "recvs",
        "sends",
        "sort_ts",
        "timing",
        "unix",
    )

    def __init__(self, timing: RequestTiming, sort_ts: int) -> None:
        self.timing = timing
        self.sort_ts = sort_ts  # when the hook record was released (its latest timestamp)
        self.first_recv: RecvRecord | None = None  # the read that delivered the first bytes
        self.delivering_recv: RecvRecord | None = None  # pipelined: the earlier request's read
        self.pipelined_with = 0  # seq of the request whose read also delivered this one
        self.recvs: list[RecvRecord] = []  # first read + later reads of headers and body
        self.prev_recv: RecvRecord | None = None  # the read before the first one, if known
        chunks = timing.chunks
        if chunks:
            self.first_chunk_ns, self.handoff_ns = chunks[0][0], chunks[-1][0]
        else:
            self.first_chunk_ns = self.handoff_ns = 0
            if timing.response_bytes:  # sizes without write times: bound by the response
                self.first_chunk_ns = timing.response_start_ns or timing.app_called_ns
        response_bytes = timing.response_bytes
        self.bytes_left = response_bytes if response_bytes > 0 else 0
        self.sends: list[tuple[SendRecord, int]] = []  # (send, bytes of this response in it)
        self.eagain = 0
        self.backpressured = False  # a write hit a full socket buffer: drains may come late
        self.kernel_traced = False
        self.unix = False
        self.cut_short = ""  # why the correlator stopped waiting for more records
        self.deadline_ns = 0


Timeline = tuple[int, int, tuple[Stage, ...], tuple[str, ...], dict[str, Detail], bool]
"""start_ns, end_ns, stages, notes, details, complete (a plain tuple: built per request)."""


def _chain(candidates: list[Stage], notes: list[str]) -> list[Stage]:
    """The candidates in canonical order that never overlap nor go backwards.

    A candidate starting before the previous stage ends is clipped to that end (noted), or
    dropped (noted) when nothing of it is left; one ending before it starts is dropped.
    build_timeline calls this only when the candidates are not a clean chain already (a
    clean chain comes out unchanged).
    """
    stages: list[Stage] = []
    cursor = 0
    previous = ""
    for stage in candidates:
        name, start, end = stage.name, stage.start_ns, stage.end_ns
        if end < start:
            notes.append(f"{name}: its end came before its start (inconsistent timestamps)")
            continue
        if start < cursor:
            if end <= cursor:
                notes.append(f"{name}: lies within {previous} (timestamps out of order)")
                continue
            notes.append(f"{name}: started before {previous} ended; counted from there")
            stage = _new(Stage, (name, stage.layer, cursor, end))
        stages.append(stage)
        cursor = end
        previous = name
    return stages


def build_timeline(
    ev: RequestEvidence,
    serving_since: int = 0,
    poll_functions: Mapping[str, str] = NO_POLL_FUNCTIONS,
) -> Timeline:
    """Stages, notes, details and completeness of one request from its evidence.

    `serving_since`: when the server began to accept (its ServerStarted hook), 0 unknown.
    `poll_functions`: interface -> the NIC driver's poll function the probes attach there."""
    timing = ev.timing
    notes: list[str] = []
    details: dict[str, Detail] = {}
    candidates: list[Stage] = []  # candidates, in canonical order
    complete = True
    start = 0  # the first kernel timestamp of the request
    cursor = 0  # the chain check (see DIRTY)
    recv = ev.first_recv

    if ev.pipelined_with:
        notes.append(
            f"pipelined: arrived in the same read as request {ev.pipelined_with} of this"
            " connection; its kernel and recv stages belong to that request"
        )
    elif recv is None:
        complete = ev.unix
        notes.append(f"{KERNEL_STAGES}, recv: {_no_recv_reason(ev)}")
    else:
        start, complete, cursor = _kernel_stages(
            recv, ev.prev_recv, candidates, notes, details, serving_since, poll_functions
        )
        recv_enter, recv_exit = recv.enter_ts, recv.ts_ns
        if not start or recv_enter < start:
            start = recv_enter
        candidates.append(_new(Stage, ("recv", SYSCALL, recv_enter, recv_exit)))
        cursor = recv_exit if cursor <= recv_enter <= recv_exit else DIRTY
        recvs = ev.recvs
        if len(recvs) == 1:  # the common case: one read (what _recv_details gives for it)
            details["recv_calls"] = 1
            details["recv_bytes"] = recv.ret
            details["recv_time_us"] = (recv_exit - recv_enter) / 1000
            details["segments"] = recv.rx.segments if recv.rx is not None else 0
        else:
            _recv_details(recvs, timing.headers_done_ns, details)

    # parse
    headers_done = timing.headers_done_ns
    if recv is not None:
        parse_start = recv.ts_ns
    elif ev.delivering_recv is not None:
        delivered = ev.delivering_recv.ts_ns
        parse_start = max(timing.first_byte_ns, delivered)
        if parse_start > delivered:
            candidates.append(_new(Stage, ("pipeline_wait", SERVER, delivered, parse_start)))
            cursor = parse_start if cursor <= delivered else DIRTY
    else:
        parse_start = timing.first_byte_ns
    if not headers_done:
        notes.append(f"parse: the request headers never completed (outcome {timing.outcome})")
    elif not parse_start:
        notes.append("parse: the first byte of the request was not observed")
    else:
        candidates.append(_new(Stage, ("parse", SERVER, parse_start, headers_done)))
        cursor = headers_done if cursor <= parse_start <= headers_done else DIRTY

    # app (and body: the part of the app's time spent waiting for the request body)
    handoff, returned = ev.handoff_ns, timing.app_returned_ns
    if handoff and (not returned or handoff <= returned):
        app_end = handoff
    else:
        app_end = returned or timing.response_done_ns
    if returned > handoff > 0:
        details["app_after_response_us"] = (returned - handoff) / 1000
    app_called = timing.app_called_ns
    body_done = timing.body_done_ns
    if timing.request_body_bytes and headers_done:
        if not body_done or (app_end and body_done > app_end):
            notes.append("body: the app answered before the request body was complete")
        elif body_done >= headers_done:
            candidates.append(_new(Stage, ("body", SERVER, headers_done, body_done)))
            cursor = body_done if cursor <= headers_done else DIRTY
            if app_called and body_done > app_called:
                details["app_waited_for_body_us"] = (body_done - app_called) / 1000
                app_called = body_done
    parsed = candidates[-1].end_ns if candidates and candidates[-1].name in PARSED else 0
    if parsed and app_called > parsed and (not app_end or app_called <= app_end):
        candidates.append(_new(Stage, ("loop_queue", EVENT_LOOP, parsed, app_called)))
        cursor = app_called if cursor <= parsed else DIRTY
    if not app_called:
        notes.append(f"app: the app was not called (outcome {timing.outcome})")
    elif not app_end:
        notes.append("app: the app never handed a response over nor returned")
    else:
        candidates.append(_new(Stage, ("app", APP, app_called, app_end)))
        cursor = app_end if cursor <= app_called <= app_end else DIRTY

    all_seen, end, cursor = _send_stage(ev, handoff or app_end, cursor, candidates, notes, details)
    if not all_seen:
        complete = False

    stages = candidates if cursor != DIRTY else _chain(candidates, notes)
    if not start:
        if ev.delivering_recv is not None:
            start = ev.delivering_recv.ts_ns
        else:
            start = timing.first_byte_ns
            if not ev.unix:
                notes.append("total: starts at the server's first byte (no kernel receive record)")
    if not end:  # no send record: the last send exit is unknown
        end = timing.response_done_ns or timing.app_returned_ns or headers_done
        if timing.response_bytes and not ev.unix:
            notes.append("total: ends at the server's last handoff (no send record)")
    if stages:
        first, last = stages[0].start_ns, stages[-1].end_ns
        if not start or first < start:
            start = first
        if last > end:
            end = last
    if not start or end < start:
        start = start or end
        end = max(end, start)

    if ev.cut_short:
        complete = False
        notes.append(ev.cut_short)
    return start, end, _tile(start, end, stages, notes), tuple(notes), details, complete


def _tile(start: int, end: int, stages: list[Stage], notes: list[str]) -> tuple[Stage, ...]:
    """The stages with every stretch of [start, end] that none covers made an explicit
    `unobserved` stage, so the leaves tile the request's total (with a note saying why)."""
    tiled: list[Stage] = []
    cursor = start
    previous = "start"
    for stage in stages:
        if stage.start_ns > cursor:
            tiled.append(_new(Stage, ("unobserved", GAP, cursor, stage.start_ns)))
            notes.append(_gap_note(previous, stage.name, notes))
        tiled.append(stage)
        cursor = stage.end_ns
        previous = stage.name
    if end > cursor:
        tiled.append(_new(Stage, ("unobserved", GAP, cursor, end)))
        notes.append(_gap_note(previous, "end", notes))
    return tuple(tiled)


def _gap_note(before: str, after: str, notes: list[str]) -> str:
    """Why nothing was observed between two stages: the note of a stage that canonically
    lies between them, when there is one."""
    between = _BETWEEN.get((before, after))
    if between is None:
        names = list(STAGE_NAMES)
        low = names.index(before) + 1 if before in names else 0
        high = names.index(after) if after in names else len(names)
        between = tuple(names[low:high])
        if len(_BETWEEN) < 1024:
            _BETWEEN[(before, after)] = between
    for note in notes:
        name = note.split(":", 1)[0]
        if name in between or any(part in between for part in name.split(", ")):
            return f"unobserved: {before} → {after}: {note.split(': ', 1)[-1]}"
    return f"unobserved: {before} → {after}: no probe or hook saw this interval"


_BETWEEN: dict[tuple[str, str], tuple[str, ...]] = {}


def _no_recv_reason(ev: RequestEvidence) -> str:
    if ev.unix:
        return "unix socket: the kernel probes follow TCP only"
    if not ev.kernel_traced:
        return "no kernel records for this connection (opened before tracing, or records lost)"
    return "no recv record delivered this request's first bytes (records lost?)"


def _kernel_stages(
    recv: RecvRecord,
    previous: RecvRecord | None,
    candidates: list[Stage],
    notes: list[str],
    details: dict[str, Detail],
    serving_since: int = 0,
    poll_functions: Mapping[str, str] = NO_POLL_FUNCTIONS,
) -> tuple[int, bool, int]:
    """Add the kernel and event-loop stages of the first read. Returns the earliest kernel
    timestamp that describes the request (0 when unknown), whether the receive path was
    observed whole, and the chain check's cursor (see DIRTY)."""
    rx = recv.rx
    if rx is None:
        notes.append(NO_RX_NOTE)
        return 0, False, 0
    # Every field of the RxPath, in order (one unpack is cheaper than ~30 attribute reads).
    (
        hardirq_ts, _, entry_ts, poll_ts, netif_rx_ts, receive_ts, tcp_ts, _, ready_ts,
        _, _, irq, rx_cpu, _, _, _, flags, dev,
    ) = rx  # fmt: skip
    if previous is not None and 0 < tcp_ts < previous.ts_ns:
        notes.append(STALE_RX_NOTE)
        return 0, False, 0
    exit_ts = recv.ts_ns
    # A timestamp after the read returned cannot describe the data it returned.
    tcp = tcp_ts if tcp_ts <= exit_ts else 0
    ready = ready_ts if ready_ts <= exit_ts else 0
    tcp_end = ready or tcp  # when the segment was queued on the socket
    earliest = tcp or ready
    cursor = 0

    # Whether the NIC/softirq times joined to this segment belong to another packet. They
    # are joined in BPF by skb address, and an address reused for another packet can
    # carry an earlier packet's times. Two checks, both impossible for the segment's own:
    # its path through the stack before the previous read on the socket even started (it
    # would then have been that read's data), or a gap from netif_receive_skb to TCP
    # longer than one NET_RX softirq run can last when TCP processed it in that softirq.
    # The earliest joined time: they come in this order along the receive path.
    first = hardirq_ts or netif_rx_ts or entry_ts or receive_ts
    whole = not (
        (previous is not None and 0 < first < previous.enter_ts)
        or (
            tcp_ts - receive_ts > MAX_SOFTIRQ_SPAN_NS
            and receive_ts > 0
            and not flags & RT_RX_PROCESS_CONTEXT
        )
    )
    if not whole:
        notes.append(STALE_SKB_NOTE)
    else:  # nic_irq, backlog, softirq and ip_tcp
        hardirq = hardirq_ts if hardirq_ts <= exit_ts else 0
        entry = entry_ts if entry_ts <= exit_ts else 0
        poll = poll_ts if poll_ts <= exit_ts else 0
        netif_rx = netif_rx_ts if netif_rx_ts <= exit_ts else 0
        receive = receive_ts if receive_ts <= exit_ts else 0
        from_hardirq = flags & RT_RX_FROM_HARDIRQ
        via_backlog = flags & RT_RX_BACKLOG

        if from_hardirq and hardirq and entry:
            candidates.append(_new(Stage, ("nic_irq", KERNEL, hardirq, entry)))
            cursor = entry if cursor <= hardirq <= entry else DIRTY
            details["irq"] = irq
            earliest = hardirq
        elif via_backlog or dev == "lo" or dev.startswith("veth"):
            notes.append(_software_notes.get(dev) or _software_note(dev or "a software device"))
        elif not from_hardirq:
            notes.append(NIC_IRQ_NOT_RAISED)
        else:
            notes.append(NIC_IRQ_UNSEEN)

        if not via_backlog:
            notes.append(BACKLOG_NAPI)
        elif netif_rx and entry >= netif_rx:
            candidates.append(_new(Stage, ("backlog", KERNEL, netif_rx, entry)))
            cursor = entry if cursor <= netif_rx <= entry else DIRTY
            earliest = netif_rx
        else:
            notes.append(BACKLOG_RUNNING if netif_rx and entry else BACKLOG_UNSEEN)

        softirq_start = poll or entry
        if via_backlog and netif_rx > softirq_start:
            softirq_start = netif_rx  # the packet was queued while this softirq already ran
        if candidates and candidates[-1].end_ns == entry and entry and softirq_start > entry:
            # nic_irq/backlog ended at softirq entry: the softirq's other work before this
            # packet's poll (other NAPI instances) is part of the softirq stage
            details["softirq_before_poll_us"] = (softirq_start - entry) / 1000
            softirq_start = entry
        if softirq_start and receive:
            candidates.append(_new(Stage, ("softirq", KERNEL, softirq_start, receive)))
            if flags & RT_RX_DRIVER_POLL:
                details["poll_function"] = poll_functions.get(dev) or DRIVER_POLL_UNNAMED
            cursor = receive if cursor <= softirq_start <= receive else DIRTY
            if softirq_start < earliest or not earliest:
                earliest = softirq_start
        else:
            notes.append(SOFTIRQ_UNSEEN)

        if receive and tcp_end:
            candidates.append(_new(Stage, ("ip_tcp", KERNEL, receive, tcp_end)))
            cursor = tcp_end if cursor <= receive <= tcp_end else DIRTY
            if receive < earliest or not earliest:
                earliest = receive
        else:
            notes.append(IP_TCP_UNSEEN)
    if flags & RT_RX_PROCESS_CONTEXT:
        notes.append(PROCESS_CONTEXT_NOTE)

    recv_enter = recv.enter_ts
    epoll_exit = recv.epoll_exit_ts
    if epoll_exit > recv_enter:
        epoll_exit = 0
    epoll_enter = recv.epoll_enter_ts
    if ready and epoll_exit >= ready and epoll_enter >= ready:
        # The loop thread entered its epoll wait only after the data was ready: it was not
        # asleep but running other work, and epoll returned at once. The wait is the loop's,
        # except while the app was still starting (the connection sat in the accept queue).
        busy_from = ready
        if ready < serving_since <= epoll_exit:
            candidates.append(_new(Stage, ("startup", SERVER, ready, serving_since)))
            cursor = serving_since if cursor <= ready else DIRTY
            busy_from = serving_since
        candidates.append(_new(Stage, ("loop_busy", EVENT_LOOP, busy_from, epoll_exit)))
        cursor = epoll_exit if cursor <= busy_from <= epoll_exit else DIRTY
        notes.append(WAKEUP_BUSY)
        details["epoll_ready"] = recv.epoll_ready
    elif ready and epoll_exit >= ready:
        candidates.append(_new(Stage, ("wakeup", KERNEL, ready, epoll_exit)))
        cursor = epoll_exit if cursor <= ready <= epoll_exit else DIRTY
        woken = recv.wakeup_ts
        if woken and ready <= woken <= epoll_exit:
            details["wake_path_us"] = (woken - ready) / 1000
            details["run_queue_us"] = (epoll_exit - woken) / 1000
            details["waker_cpu"] = recv.waker_cpu
        details["epoll_ready"] = recv.epoll_ready
    else:
        notes.append(
            WAKEUP_NO_READY if not ready else WAKEUP_NO_EPOLL if not epoll_exit else WAKEUP_AWAKE
        )

    loop_start = epoll_exit if epoll_exit >= tcp_end else tcp_end
    if loop_start:
        candidates.append(_new(Stage, ("event_loop", EVENT_LOOP, loop_start, recv_enter)))
        cursor = recv_enter if cursor <= loop_start <= recv_enter else DIRTY
    else:
        notes.append(EVENT_LOOP_UNSEEN)

    details["rx_dev"] = dev
    details["rx_cpu"] = rx_cpu
    return earliest, whole and earliest > 0, cursor


def _recv_details(recvs: list[RecvRecord], headers_done: int, details: dict[str, Detail]) -> None:
    first = recvs[0]
    if len(recvs) == 1:
        details["recv_calls"] = 1
        details["recv_bytes"] = first.ret
        details["recv_time_us"] = (first.ts_ns - first.enter_ts) / 1000
        details["segments"] = first.rx.segments if first.rx is not None else 0
        return
    details["recv_calls"] = len(recvs)
    details["recv_bytes"] = sum(r.ret for r in recvs)
    details["recv_time_us"] = sum(r.ts_ns - r.enter_ts for r in recvs) / 1000
    details["segments"] = sum(r.rx.segments for r in recvs if r.rx is not None)
    header_reads = sum(1 for r in recvs[1:] if not headers_done or r.ts_ns <= headers_done)
    if header_reads:
        details["header_recv_calls"] = header_reads
    if len(recvs) - 1 > header_reads:
        details["body_recv_calls"] = len(recvs) - 1 - header_reads


def _send_stage(
    ev: RequestEvidence,
    handoff: int,
    cursor: int,
    candidates: list[Stage],
    notes: list[str],
    details: dict[str, Detail],
) -> tuple[bool, int, int]:
    """Add the send stage and the send details. Returns whether every response byte was
    seen in send records, the last exit of the request's sends (0 without any) and the
    chain check's cursor (see DIRTY)."""
    timing = ev.timing
    sends = ev.sends
    response_bytes = timing.response_bytes
    final_start = final_end = last_exit = last_xmit = 0
    if sends:
        streaming_calls = xmits = time_ns = taken_bytes = streaming_bytes = 0
        for send, taken in sends:
            enter, exit_ts = send.enter_ts, send.ts_ns
            taken_bytes += taken
            time_ns += exit_ts - enter
            xmits += send.xmit_count
            if exit_ts > last_exit:
                last_exit = exit_ts
            if enter < handoff:
                streaming_calls += 1
                streaming_bytes += taken
            else:
                if not final_start:
                    final_start = enter
                if exit_ts > final_end:
                    final_end = exit_ts
                if send.xmit_last_ts > last_xmit:
                    last_xmit = send.xmit_last_ts
        details["send_calls"] = len(sends)
        details["send_bytes"] = taken_bytes
        details["send_time_us"] = time_ns / 1000
        details["xmit_count"] = xmits
        if streaming_calls:
            details["streaming_send_calls"] = streaming_calls
            details["streaming_send_bytes"] = streaming_bytes
    if ev.eagain:
        details["eagain"] = ev.eagain
    details["response_bytes"] = response_bytes
    if timing.request_body_bytes:
        details["request_body_bytes"] = timing.request_body_bytes

    if final_start:
        app_end = candidates[-1].end_ns if candidates and candidates[-1].name == "app" else 0
        if app_end and final_start > app_end:
            candidates.append(_new(Stage, ("handoff", SERVER, app_end, final_start)))
            cursor = final_start if cursor <= app_end else DIRTY
        candidates.append(_new(Stage, ("send", SYSCALL, final_start, final_end)))
        cursor = final_end if cursor <= final_start <= final_end else DIRTY
        if final_start <= last_xmit <= final_end:
            # the response's last segment went to the device this long before the send
            # syscall returned (softirq work run in the syscall's context, preemption)
            details["send_after_xmit_us"] = (final_end - last_xmit) / 1000
    elif not response_bytes:
        notes.append(f"send: no response bytes were written ({timing.outcome})")
    elif ev.unix:
        notes.append("send: unix socket")
    elif not ev.kernel_traced:
        notes.append("send: no kernel records for this connection")
    elif sends:
        notes.append("send: no send syscall recorded after the final handoff")
    else:
        notes.append("send: no send record for the response (records lost?)")

    if ev.bytes_left and response_bytes and ev.kernel_traced and not ev.unix:
        seen = response_bytes - ev.bytes_left
        notes.append(f"send: {seen} of {response_bytes} response bytes seen in send records")
        details["response_bytes_unseen"] = ev.bytes_left
        return False, last_exit, cursor
    return True, last_exit, cursor
