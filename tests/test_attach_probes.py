"""The kernel's copy of each request's first bytes and its response's status line
(RT_CFG_CAPTURE_HEAD, attach mode): once per request, never without the flag."""

from __future__ import annotations

import pytest

from tracer.kernel.attach_plan import ProbePlan, build_plan
from tracer.kernel.attach_trials import AttachTrials
from tracer.kernel.probe_loader import ProbeSession
from tracer.kernel.system_facts import gather
from tracer.records.kernel import KernelRecord, RecvRecord, SendRecord, StateRecord

from .probe_fixtures import REQUEST, SMALL_RESPONSE, collect, http_exchange, tiny_server

pytestmark = pytest.mark.bpf

TCP_CLOSE = 7


def _exchange(plan: ProbePlan, capture: bool, requests: int = 3) -> list[KernelRecord]:
    with tiny_server() as server, ProbeSession(plan) as probes:
        probes.set_targets(tgids={server.pid}, ports={server.port}, capture_heads=capture)
        client_port = http_exchange(server.host, server.port, requests=requests)

        def closed(records: list[KernelRecord]) -> bool:
            return any(
                isinstance(r, StateRecord)
                and r.sock.rport == client_port
                and r.newstate == TCP_CLOSE
                for r in records
            )

        records = collect(probes, closed)
        assert probes.lost_records()["recv_head"] == 0
    return [r for r in records if getattr(r, "sock", None) and r.sock.rport == client_port]


def _heads(records: list[KernelRecord]) -> tuple[list[bytes], list[bytes]]:
    recvs = [r.head for r in records if isinstance(r, RecvRecord) and r.ret > 0]
    sends = [r.head for r in records if isinstance(r, SendRecord)]
    return recvs, sends


def test_each_request_and_response_head_is_captured_once(tracepoint_plan: ProbePlan) -> None:
    recvs, sends = _heads(_exchange(tracepoint_plan, capture=True))
    assert recvs == [REQUEST] * 3  # the whole request fits in RT_HEAD_BYTES
    assert sends == [SMALL_RESPONSE[:16]] * 3


def test_nothing_is_captured_without_the_flag(tracepoint_plan: ProbePlan) -> None:
    recvs, sends = _heads(_exchange(tracepoint_plan, capture=False, requests=2))
    assert recvs == [b""] * 2 and sends == [b""] * 2


def test_the_raw_tracepoint_fallback_captures_the_same() -> None:
    points = ("socket_recv", "socket_send", "accept", "socket_close", "epoll_wait")
    with AttachTrials(gather()) as trials:
        plan = build_plan(trials, prefer=dict.fromkeys(points, "raw_tracepoint"))
    assert {plan.coverage()[p] for p in points} == {"raw_tracepoint"}
    recvs, sends = _heads(_exchange(plan, capture=True, requests=2))
    assert recvs == [REQUEST] * 2
    assert sends == [SMALL_RESPONSE[:16]] * 2
