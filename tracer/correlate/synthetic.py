"""Synthetic kernel and hook records for the correlator's tests and benchmarks (scripts/).

`Scenario` plays a server: connections open, requests arrive and are answered, and every
step leaves the records the probes and the server hooks would leave, with consistent
timestamps (CLOCK_MONOTONIC ns). Each request returns its `Expected` stage boundaries so
tests can assert what the correlator should find. `arrival_order` then shuffles the
records the way the two live streams deliver them (~20 ms batches, CPUs interleaved).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tracer.correlate.correlator import Correlator, FeedRecord, timing_sort_key
from tracer.model.trace import RequestTrace
from tracer.records.hooks import (
    HOOK_RECORD_TYPES,
    ConnectionClosed,
    ConnectionOpened,
    RequestTiming,
)
from tracer.records.kernel import (
    RT_RX_BACKLOG,
    RT_RX_DATA_READY,
    RT_RX_FROM_HARDIRQ,
    RT_RX_SKB_SEEN,
    RT_RX_VALID,
    AcceptRecord,
    DropRecord,
    RecvRecord,
    ResetRecord,
    RetransmitRecord,
    RxPath,
    SendRecord,
    SocketId,
    StateRecord,
)

US = 1_000
MS = 1_000_000
PID = 4242
TID = 4243
SERVER_IP = "127.0.0.1"
SERVER_PORT = 8000
EAGAIN = -11

TCP_ESTABLISHED, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 3, 4, 7, 8


def sock_id(client_port: int, sk: int | None = None, client_ip: str = "127.0.0.1") -> SocketId:
    return SocketId(
        sk=sk if sk is not None else 0xFFFF_0000_0000 + client_port * 0x100,
        cookie=client_port,
        family=2,
        laddr=SERVER_IP,
        lport=SERVER_PORT,
        raddr=client_ip,
        rport=client_port,
    )


def rx_path(at: int, *, dev: str = "lo", segments: int = 1, size: int = 100) -> RxPath:
    """The receive path of a segment whose first kernel event happened at `at`."""
    flags = RT_RX_VALID | RT_RX_SKB_SEEN | RT_RX_DATA_READY
    if dev == "lo" or dev.startswith("veth"):
        flags |= RT_RX_BACKLOG
        return RxPath(
            hardirq_ts=0,
            softirq_raise_ts=at + 1 * US,
            softirq_entry_ts=at + 3 * US,
            poll_start_ts=at + 3 * US,
            netif_rx_ts=at,
            netif_receive_ts=at + 5 * US,
            tcp_ts=at + 8 * US,
            last_tcp_ts=at + 8 * US,
            data_ready_ts=at + 10 * US,
            segments=segments,
            bytes=size,
            irq=0,
            rx_cpu=0,
            srtt_us=50,
            rcv_wnd=65535,
            snd_wnd=65535,
            flags=flags,
            dev=dev,
        )
    return RxPath(
        hardirq_ts=at,
        softirq_raise_ts=at + 1 * US,
        softirq_entry_ts=at + 3 * US,
        poll_start_ts=at + 4 * US,
        netif_rx_ts=0,
        netif_receive_ts=at + 5 * US,
        tcp_ts=at + 8 * US,
        last_tcp_ts=at + 8 * US,
        data_ready_ts=at + 10 * US,
        segments=segments,
        bytes=size,
        irq=33,
        rx_cpu=1,
        srtt_us=300,
        rcv_wnd=64000,
        snd_wnd=62000,
        flags=flags | RT_RX_FROM_HARDIRQ,
        dev=dev,
    )


def recv_record(
    sock: SocketId,
    fd: int,
    *,
    enter: int,
    exit: int,
    ret: int,
    rx: RxPath | None,
    epoll_enter: int = 0,
    epoll_exit: int = 0,
    wakeup: int = 0,
    cpu: int = 0,
) -> RecvRecord:
    return RecvRecord(
        ts_ns=exit,
        cpu=cpu,
        pid=PID,
        tid=TID,
        sock=sock,
        fd=fd,
        ret=ret,
        enter_ts=enter,
        epoll_enter_ts=epoll_enter,
        epoll_exit_ts=epoll_exit,
        wakeup_ts=wakeup,
        epoll_ready=1,
        syscall=45,
        waker_cpu=1,
        rx=rx,
    )


def send_record(
    sock: SocketId, fd: int, *, enter: int, exit: int, ret: int, cpu: int = 0
) -> SendRecord:
    xmit = ret > 0
    return SendRecord(
        ts_ns=exit,
        cpu=cpu,
        pid=PID,
        tid=TID,
        sock=sock,
        fd=fd,
        ret=ret,
        enter_ts=enter,
        xmit_first_ts=enter + 5 * US if xmit else 0,
        xmit_last_ts=enter + 6 * US if xmit else 0,
        xmit_count=1 if xmit else 0,
        xmit_bytes=max(ret, 0),
        xmit_rc=0,
        syscall=44,
        flags=1 if xmit else 0,
        dev="lo" if xmit else "",
    )


def timing(
    fd: int,
    conn_id: int,
    seq: int,
    *,
    first_byte: int,
    headers_done: int,
    app_called: int,
    chunks: tuple[tuple[int, int], ...],
    response_done: int,
    app_returned: int,
    body_done: int = 0,
    method: str = "GET",
    path: str = "/",
    status: int = 200,
    request_body_bytes: int = 0,
    outcome: str = "ok",
    headers: tuple[tuple[str, str], ...] = (("host", "localhost"),),
) -> RequestTiming:
    return RequestTiming(
        pid=PID,
        tid=TID,
        fd=fd,
        conn_id=conn_id,
        seq=seq,
        method=method,
        path=path,
        query="",
        http_version="1.1",
        status=status,
        first_byte_ns=first_byte,
        headers_done_ns=headers_done,
        body_done_ns=body_done or headers_done + 1 * US,
        app_called_ns=app_called,
        response_start_ns=chunks[0][0] - 2 * US if chunks else 0,
        app_returned_ns=app_returned,
        response_done_ns=response_done,
        chunks=chunks,
        request_body_bytes=request_body_bytes,
        response_bytes=sum(size for _, size in chunks),
        keep_alive=True,
        outcome=outcome,
        headers=headers,
    )


@dataclass
class Expected:
    """Stage boundaries a request should get, by stage name, and its total."""

    seq: int
    stages: dict[str, tuple[int, int]]
    start_ns: int
    end_ns: int


@dataclass
class ScriptedConnection:
    """One scripted connection of a `Scenario`."""

    scenario: Scenario
    client_port: int
    fd: int
    conn_id: int
    sock: SocketId
    loop_idle_since: int
    seq: int = 0

    def request(
        self,
        at: int,
        *,
        dev: str = "lo",
        response: tuple[int, ...] = (1200,),
        send_plan: tuple[int, ...] | None = None,
        drain_delay: int = 0,
        body_reads: int = 0,
        upload_bytes: int = 0,
        app_time: int = 40 * US,
        app_after_response: int = 10 * US,
        loop_busy: bool = False,
        pipelined: int = 0,
        method: str = "GET",
        path: str = "/",
        status: int = 200,
        headers: tuple[tuple[str, str], ...] = (("host", "localhost"),),
        cpu: int = 0,
    ) -> list[Expected]:
        """One read that delivers 1 + `pipelined` requests, each answered in turn.

        `response`: sizes of the transport.write calls of the (first) response (several =
        streaming). `send_plan`: what the send syscalls return for the LAST write (e.g.
        (65536, EAGAIN, 34464) = short write, a full buffer, then the drain); the drain
        happens `drain_delay` after the first send.
        """
        sc = self.scenario
        rx = rx_path(at, dev=dev, segments=1 + (1 if upload_bytes else 0), size=300)
        ready = rx.data_ready_ts
        if loop_busy:  # the loop came back to epoll after the data arrived: no sleep
            epoll_enter, wakeup, epoll_exit = ready + 30 * US, 0, ready + 32 * US
        else:
            epoll_enter, wakeup, epoll_exit = self.loop_idle_since, ready + 2 * US, ready + 10 * US
        recv_enter, recv_exit = epoll_exit + 5 * US, epoll_exit + 15 * US
        sc.add(
            recv_record(
                self.sock,
                self.fd,
                enter=recv_enter,
                exit=recv_exit,
                ret=300 * (1 + pipelined),
                rx=rx,
                epoll_enter=epoll_enter,
                epoll_exit=epoll_exit,
                wakeup=wakeup,
                cpu=cpu,
            )
        )
        out: list[Expected] = []
        t = recv_exit + 10 * US  # data_received
        first_byte = t
        for index in range(1 + pipelined):
            self.seq += 1
            headers_done = t + 15 * US
            app_called = headers_done + 10 * US
            body_done = headers_done + 1 * US
            stages: dict[str, tuple[int, int]] = {}
            if index == 0:
                if dev == "lo" or dev.startswith("veth"):
                    stages["backlog"] = (rx.netif_rx_ts, rx.softirq_entry_ts)
                    stages["softirq"] = (rx.poll_start_ts, rx.netif_receive_ts)
                else:  # the softirq runs from its entry (nic_irq ends there)
                    stages["nic_irq"] = (rx.hardirq_ts, rx.softirq_entry_ts)
                    stages["softirq"] = (rx.softirq_entry_ts, rx.netif_receive_ts)
                stages["ip_tcp"] = (rx.netif_receive_ts, rx.data_ready_ts)
                stages["loop_busy" if loop_busy else "wakeup"] = (ready, epoll_exit)
                stages["event_loop"] = (epoll_exit, recv_enter)
                stages["recv"] = (recv_enter, recv_exit)
                stages["parse"] = (recv_exit, headers_done)
                start = rx.hardirq_ts or rx.netif_rx_ts
            else:
                if first_byte > recv_exit:  # waited behind the earlier request
                    stages["pipeline_wait"] = (recv_exit, first_byte)
                stages["parse"] = (max(first_byte, recv_exit), headers_done)
                start = recv_exit
            cursor = app_called
            for read in range(body_reads if index == 0 else 0):  # upload body, read by the app
                enter = cursor + (read + 1) * 20 * US
                sc.add(
                    recv_record(
                        self.sock,
                        self.fd,
                        enter=enter,
                        exit=enter + 5 * US,
                        ret=upload_bytes // body_reads,
                        rx=rx_path(enter - 15 * US, dev=dev),
                        epoll_enter=enter - 12 * US,
                        epoll_exit=enter - 3 * US,
                        wakeup=0,
                        cpu=cpu,
                    )
                )
                body_done = enter + 8 * US
                cursor = body_done
            sizes = response if index == 0 else (response[-1],)
            chunks: list[tuple[int, int]] = []
            cursor = max(cursor, app_called + app_time)
            send_end = 0
            final_send_start = 0
            for number, size in enumerate(sizes):
                chunk_ts = cursor
                chunks.append((chunk_ts, size))
                last = number == len(sizes) - 1
                plan = send_plan if (last and send_plan and index == 0) else (size,)
                enter = chunk_ts + 3 * US
                if last:
                    final_send_start = enter
                for step, ret in enumerate(plan):
                    if step == len(plan) - 1 and step > 0:
                        enter += drain_delay
                    sc.add(
                        send_record(self.sock, self.fd, enter=enter, exit=enter + 20 * US, ret=ret)
                    )
                    send_end = enter + 20 * US
                    enter = send_end + 2 * US
                cursor = chunk_ts + 30 * US
            handoff = chunks[-1][0]
            response_done = handoff + 25 * US
            if upload_bytes and index == 0:  # the body stage, and the app after it
                stages["body"] = (headers_done, body_done)
                if app_called > body_done:
                    stages["loop_queue"] = (body_done, app_called)
                stages["app"] = (max(app_called, body_done), handoff)
            else:
                stages["loop_queue"] = (headers_done, app_called)
                stages["app"] = (app_called, handoff)
            if final_send_start > handoff:
                stages["handoff"] = (handoff, final_send_start)
            stages["send"] = (final_send_start, send_end)
            app_returned = response_done + app_after_response
            sc.add(
                timing(
                    self.fd,
                    self.conn_id,
                    self.seq,
                    first_byte=first_byte,
                    headers_done=headers_done,
                    app_called=app_called,
                    chunks=tuple(chunks),
                    response_done=response_done,
                    app_returned=app_returned,
                    body_done=body_done,
                    method=method,
                    path=path,
                    status=status,
                    request_body_bytes=upload_bytes if index == 0 else 0,
                    headers=headers,
                )
            )
            out.append(Expected(self.seq, stages, start, send_end))
            t = max(app_returned, send_end) + 5 * US
            self.loop_idle_since = t
        return out

    def retransmit(self, at: int) -> None:
        self.scenario.add(RetransmitRecord(at, 1, 0, 0, self.sock, TCP_ESTABLISHED, 0))

    def reset(self, at: int) -> None:
        self.scenario.add(ResetRecord(at, 1, 0, 0, self.sock, 1, TCP_ESTABLISHED, 0))

    def drop(self, at: int) -> None:
        self.scenario.add(DropRecord(at, 1, 0, 0, self.sock, 0, 1, 0, 4096, 2048))

    def close(self, at: int, *, by: str = "client") -> None:
        """The client (or the server) closes; the records of both sides follow."""
        sc = self.scenario
        if by == "client":
            sc.add(
                recv_record(self.sock, self.fd, enter=at + 5 * US, exit=at + 8 * US, ret=0, rx=None)
            )
            sc.add(StateRecord(at, 1, 0, 0, self.sock, TCP_ESTABLISHED, TCP_CLOSE_WAIT, 0, -1))
            sc.add(StateRecord(at + 20 * US, 0, PID, TID, self.sock, TCP_CLOSE_WAIT, 9, 0, self.fd))
            sc.add(StateRecord(at + 60 * US, 1, 0, 0, self.sock, 9, TCP_CLOSE, 0, -1))
        else:
            sc.add(
                StateRecord(at, 0, PID, TID, self.sock, TCP_ESTABLISHED, TCP_FIN_WAIT1, 0, self.fd)
            )
            sc.add(StateRecord(at + 60 * US, 1, 0, 0, self.sock, TCP_FIN_WAIT1, TCP_CLOSE, 0, -1))
        reason = "client_closed" if by == "client" else "server_closed"
        sc.add(ConnectionClosed(PID, TID, self.fd, self.conn_id, self.seq, reason, at + 30 * US))


@dataclass
class Scenario:
    """Records of a scripted server run, in the order they happened."""

    records: list[FeedRecord] = field(default_factory=list)
    next_conn_id: int = 1

    def add(self, record: FeedRecord) -> None:
        self.records.append(record)

    def connect(
        self,
        at: int,
        client_port: int,
        fd: int,
        *,
        sk: int | None = None,
        with_handshake: bool = True,
        with_open: bool = True,
    ) -> ScriptedConnection:
        """A client connects at `at`: SYN_RECV -> ESTABLISHED, accept, connection_made."""
        sock = sock_id(client_port, sk)
        if with_handshake:
            self.add(
                StateRecord(at + 40 * US, 1, 0, 0, sock, TCP_SYN_RECV, TCP_ESTABLISHED, at, -1)
            )
            self.add(AcceptRecord(at + 90 * US, 0, PID, TID, fd, 3, at + 85 * US, 288))
        conn_id = self.next_conn_id
        self.next_conn_id += 1
        if with_open:
            peer = ("127.0.0.1", client_port)
            self.add(
                ConnectionOpened(
                    PID, TID, fd, conn_id, peer, (SERVER_IP, SERVER_PORT), at + 100 * US
                )
            )
        return ScriptedConnection(self, client_port, fd, conn_id, sock, at + 110 * US)

    def time_ordered(self) -> list[FeedRecord]:
        return sorted(self.records, key=event_time)


def event_time(record: FeedRecord) -> int:
    """When a record was produced (a RequestTiming: when its cycle ended)."""
    if isinstance(record, RequestTiming):
        return timing_sort_key(record)
    return record.ts_ns


def is_hook(record: FeedRecord) -> bool:
    return isinstance(record, HOOK_RECORD_TYPES)


def arrival_order(
    records: list[FeedRecord], *, batch_ns: int = 20 * MS, hook_phase_ns: int = 7 * MS
) -> list[FeedRecord]:
    """The order a live run receives records in: two streams, each in ~20 ms batches.

    Kernel records reach user space when their batch is drained; inside a batch all of
    one CPU's records come before the next CPU's (so CPUs interleave out of order). Hook
    records come in their own batches, on a timer shifted by `hook_phase_ns`.
    """

    def arrival(record: FeedRecord) -> tuple[int, int, int, int]:
        ts = event_time(record)
        if is_hook(record):
            batch_end = ((ts - hook_phase_ns) // batch_ns + 1) * batch_ns + hook_phase_ns
            return (batch_end, 1, 0, ts)
        batch_end = (ts // batch_ns + 1) * batch_ns
        return (batch_end, 0, getattr(record, "cpu", 0), ts)

    return sorted(records, key=arrival)


def with_cpu(record: FeedRecord, cpu: int) -> FeedRecord:
    """The same kernel record as if a different CPU had emitted it."""
    if isinstance(record, HOOK_RECORD_TYPES):
        return record
    return record._replace(cpu=cpu)


# ---- running the correlator in tests --------------------------------------------------


def run(records: Iterable[FeedRecord], correlator: Correlator | None = None) -> list[RequestTrace]:
    """Feed every record, then flush: all the traces, in the order they came out."""
    correlator = correlator or Correlator()
    out: list[RequestTrace] = []
    for record in records:
        out.extend(correlator.feed(record))
    out.extend(correlator.flush())
    return out


def stage_map(trace: RequestTrace) -> dict[str, tuple[int, int]]:
    return {stage.name: (stage.start_ns, stage.end_ns) for stage in trace.stages}


def by_seq(traces: list[RequestTrace]) -> dict[tuple[int, int], RequestTrace]:
    return {(trace.conn_id, trace.seq): trace for trace in traces}


def assert_matches(trace: RequestTrace, expected: Expected) -> None:
    assert stage_map(trace) == expected.stages
    assert (trace.start_ns, trace.end_ns) == (expected.start_ns, expected.end_ns)
