"""Request traces for dashboard tests: built by hand, with realistic stage layouts."""

from __future__ import annotations

from tracer.model.stages import LAYER_OF
from tracer.model.trace import ConnectionFacts, RequestTrace, Stage

BASE_NS = 5_000_000_000_000


def make_trace(
    number: int,
    path: str = "/",
    app_us: int = 50,
    status: int = 200,
    method: str = "GET",
    start_ns: int | None = None,
    complete: bool = True,
    notes: tuple[str, ...] = (),
) -> RequestTrace:
    """A loopback-shaped trace: backlog, softirq, ip_tcp, wakeup, loop, recv, parse, app, send."""
    start = BASE_NS + number * 10_000_000 if start_ns is None else start_ns
    plan = [
        ("backlog", 3_000),
        ("softirq", 4_000),
        ("ip_tcp", 9_000),
        ("wakeup", 25_000),
        ("event_loop", 6_000),
        ("recv", 5_000),
        ("parse", 12_000),
        ("app", app_us * 1_000),
        ("send", 20_000),
    ]
    stages, at = [], start
    for name, duration in plan:
        stages.append(Stage(name, LAYER_OF[name], at, at + duration))
        at += duration
    return RequestTrace(
        id=number,
        pid=4242,
        fd=12,
        conn_id=1 + number // 10,
        seq=1 + number % 10,
        method=method,
        path=path,
        status=status,
        client=("127.0.0.1", 50_000 + number),
        server=("127.0.0.1", 8000),
        start_ns=start,
        end_ns=at,
        complete=complete,
        stages=tuple(stages),
        notes=notes or ("nic_irq: no hardware interrupt: packet came from lo (software device)",),
        connection=ConnectionFacts(
            handshake_us=35.0, accept_queue_us=120.0, srtt_us=28, rcv_wnd=65_483, snd_wnd=65_536
        ),
        details={"recv_calls": 1, "recv_bytes": 120, "segments": 1, "send_calls": 1},
    )
