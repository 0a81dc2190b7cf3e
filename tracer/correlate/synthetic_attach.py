"""Synthetic kernel records of a server traced without hooks (`reqtrace attach`).

`attach_request` plays one request on a `ScriptedConnection` of synthetic.py the way the
probes see it with RT_CFG_CAPTURE_HEAD: reads (the first carrying the request's first
bytes), the server's work, sends (the first carrying the status line), and no hook record
at all. It returns the stage boundaries KernelOnlyCorrelator should find.
"""

from __future__ import annotations

from tracer.correlate.synthetic import (
    US,
    Expected,
    ScriptedConnection,
    recv_record,
    rx_path,
    send_record,
)
from tracer.records.kernel import RT_HEAD_BYTES, RT_STATUS_BYTES

EAGAIN = -11


def attach_request(
    connection: ScriptedConnection,
    at: int,
    *,
    request: bytes = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    reads: int = 1,
    read_gap: int = 200 * US,
    server_time: int = 300 * US,
    sends: tuple[int, ...] = (1200,),
    send_gap: int = 5 * US,
    status_line: bytes = b"HTTP/1.1 200 OK\r\n",
    blocking: bool = False,
    dev: str = "lo",
    captured: bool = True,
) -> Expected:
    """One request whose data reaches the socket at `at`, read in `reads` reads.

    `sends`: what each send syscall returns (EAGAIN for a full buffer; the send after it
    comes `send_gap` later, e.g. a long drain). `blocking`: the server thread sat in recv
    before the data came (thread per connection) instead of in epoll_wait.
    """
    sc = connection.scenario
    connection.seq += 1
    sizes = [len(request) // reads] * reads
    sizes[-1] += len(request) - sum(sizes)
    rx = rx_path(at, dev=dev, size=sizes[0])
    ready = rx.data_ready_ts
    stages: dict[str, tuple[int, int]] = {}
    if dev == "lo" or dev.startswith("veth"):
        stages["backlog"] = (rx.netif_rx_ts, rx.softirq_entry_ts)
        stages["softirq"] = (rx.poll_start_ts, rx.netif_receive_ts)
    else:
        stages["nic_irq"] = (rx.hardirq_ts, rx.softirq_entry_ts)
        stages["softirq"] = (rx.softirq_entry_ts, rx.netif_receive_ts)
    stages["ip_tcp"] = (rx.netif_receive_ts, ready)
    if blocking:
        epoll_enter = epoll_exit = wakeup = 0
        recv_enter, recv_exit = connection.loop_idle_since, ready + 12 * US
        stages["recv"] = (ready, recv_exit)
    else:
        epoll_enter, wakeup, epoll_exit = (
            connection.loop_idle_since,
            ready + 2 * US,
            ready + 10 * US,
        )
        recv_enter, recv_exit = epoll_exit + 5 * US, epoll_exit + 15 * US
        stages["wakeup"] = (ready, epoll_exit)
        stages["event_loop"] = (epoll_exit, recv_enter)
        stages["recv"] = (recv_enter, recv_exit)
    head = request[: min(sizes[0], RT_HEAD_BYTES)] if captured else b""
    sc.add(
        recv_record(
            connection.sock,
            connection.fd,
            enter=recv_enter,
            exit=recv_exit,
            ret=sizes[0],
            rx=rx,
            epoll_enter=epoll_enter,
            epoll_exit=epoll_exit,
            wakeup=wakeup,
        )._replace(head=head)
    )
    last_exit = recv_exit
    for size in sizes[1:]:
        arrive = last_exit + read_gap
        more = rx_path(arrive, dev=dev, size=size)
        enter = more.data_ready_ts + 8 * US
        sc.add(
            recv_record(
                connection.sock,
                connection.fd,
                enter=enter,
                exit=enter + 6 * US,
                ret=size,
                rx=more,
                epoll_enter=last_exit + 2 * US,
                epoll_exit=more.data_ready_ts + 4 * US,
            )
        )
        last_exit = enter + 6 * US
    if reads > 1:
        stages["unobserved"] = (recv_exit, last_exit)
    enter = last_exit + server_time
    stages["server"] = (last_exit, enter)
    first_send = enter
    end = enter
    for number, ret in enumerate(sends):
        record = send_record(
            connection.sock, connection.fd, enter=enter, exit=enter + 20 * US, ret=ret
        )
        if number == 0 and ret > 0:
            record = record._replace(head=status_line[: min(ret, RT_STATUS_BYTES)])
        sc.add(record)
        end = enter + 20 * US
        enter = end + send_gap
    stages["send"] = (first_send, end)
    connection.loop_idle_since = end + 5 * US
    return Expected(connection.seq, stages, rx.netif_rx_ts or rx.hardirq_ts, end)
