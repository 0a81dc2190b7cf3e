"""reqtrace's fentry and kprobe fallback adapters (probes/adapters_function.h), for real.

The plan picks tracepoints first; these adapters only run on kernels that lack one. Our own
machines (Linux 6.18 without CONFIG_KPROBES, fentry refused with EPERM) cannot load them, so
the tests that do load them skip unless this kernel's attach trials (what `reqtrace doctor`
reports) say the mechanism works. They are exercised through scripts/kernel_vm, which boots
Debian's 6.12 kernel (kprobes, BTF, exact headers) on this machine's own root filesystem:

    scripts/kernel_vm -- .venv/bin/python -m pytest -q tests/test_function_adapters.py -k inside_vm

and tests/test_kernel_vm.py (marked `bpf`, so CI runs it) does exactly that in its one boot,
with tests/kernel_vm_guest.py, and fails unless they all pass there. These tests are not
marked `bpf` themselves: on a host that cannot run the adapters they skip instead of failing
CI's "no skipped bpf test" rule.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator

import pytest

from probes.catalog import CATALOG, POINTS_BY_NAME, Mechanism
from tracer.kernel.attach_plan import build_plan
from tracer.kernel.attach_trials import AttachTrials
from tracer.kernel.probe_loader import ProbeSession
from tracer.kernel.system_facts import gather, tracing_blocker
from tracer.records.kernel import AcceptRecord, KernelRecord, RecvRecord, SendRecord, StateRecord

from .probe_fixtures import REQUEST, SMALL_RESPONSE, collect, http_exchange, tiny_server

FUNCTION_MECHANISMS: tuple[Mechanism, ...] = ("fentry", "kprobe")
# Points whose function strategy reads no kernel struct field: the ones with an adapter in
# probes/adapters_function.h. The rest keep their tracepoint in these plans.
LAYOUT_FREE_FUNCTION_POINTS = {
    point.name
    for point in CATALOG
    for strategy in point.strategies
    if strategy.mechanism == "fentry" and not strategy.reads_struct_layouts
}
# What the receive/send path below needs from the function adapters.
PATH_POINTS = {
    "net_rx_softirq",
    "napi_poll",
    "netif_receive",
    "socket_data_ready",
    "epoll_wait",
    "socket_recv",
    "socket_send",
    "device_xmit",
    "accept",
    "socket_close",
}
TCP_ESTABLISHED, TCP_CLOSE = 1, 7
# x86-64 syscall numbers (the ABI): what each record says its syscall was.
NR_READ, NR_WRITE, NR_WRITEV = 0, 1, 20
NR_SENDTO, NR_RECVFROM, NR_SENDMSG, NR_RECVMSG = 44, 45, 46, 47


@functools.cache
def _unavailable(mechanism: Mechanism) -> str:
    """Why `mechanism` cannot be used on this kernel ("" when the attach trial works)."""
    facts = gather()
    blocker = tracing_blocker(facts)
    if blocker:
        return blocker
    strategy = POINTS_BY_NAME["socket_data_ready"].strategy(mechanism)
    assert strategy is not None
    with AttachTrials(facts) as trials:
        attempt = trials.try_strategy(strategy)
    return "" if attempt.attached else attempt.reason


@pytest.fixture(scope="module", params=FUNCTION_MECHANISMS)
def function_probes(request: pytest.FixtureRequest) -> Iterator[ProbeSession]:
    """reqtrace's probes loaded with `mechanism` for every layout-free point (one load per
    mechanism and module: compiling takes a while in an emulated VM). Skips where the
    mechanism is unavailable."""
    mechanism: Mechanism = request.param
    reason = _unavailable(mechanism)
    if reason:
        pytest.skip(
            f"{mechanism} is not available on this kernel ({reason}); these tests run "
            "inside scripts/kernel_vm"
        )
    with AttachTrials(gather()) as trials:
        plan = build_plan(trials, prefer=dict.fromkeys(LAYOUT_FREE_FUNCTION_POINTS, mechanism))
    coverage = plan.coverage()
    wrong = {p: coverage[p] for p in LAYOUT_FREE_FUNCTION_POINTS if coverage[p] != mechanism}
    assert not wrong, f"{mechanism} did not attach for {wrong}: " + "; ".join(
        e.summary for e in plan.entries if e.point.name in wrong
    )
    # No layout-free function adapter exists for these: their tracepoints stay.
    assert coverage["tcp_receive"] == "tracepoint"
    assert coverage["tcp_state"] == "tracepoint"
    with ProbeSession(plan) as probes:
        yield probes


@pytest.fixture
def probes(function_probes: ProbeSession) -> Iterator[ProbeSession]:
    """The shared session, emptied before the test and disabled after it."""
    function_probes.disable()
    function_probes.drain()
    yield function_probes
    function_probes.disable()


def test_every_path_point_has_a_layout_free_function_strategy() -> None:
    assert PATH_POINTS <= LAYOUT_FREE_FUNCTION_POINTS
    for name in LAYOUT_FREE_FUNCTION_POINTS:
        kprobe = POINTS_BY_NAME[name].strategy("kprobe")
        fentry = POINTS_BY_NAME[name].strategy("fentry")
        assert kprobe is not None and fentry is not None
        assert kprobe.targets == fentry.targets and not kprobe.reads_struct_layouts


def _server_sk(records: list[KernelRecord], client_port: int) -> int:
    """The server socket of the connection from client_port (0 until it is established).

    Found by its ESTABLISHED record (ports from the tracepoint's own fields); records are then
    matched by socket, not by the identity reqtrace keeps per socket, which is not what the
    function adapters are about.
    """
    established = [
        r
        for r in records
        if isinstance(r, StateRecord)
        and r.newstate == TCP_ESTABLISHED
        and r.sock.rport == client_port
    ]
    return established[0].sock.sk if established else 0


def _closed(client_port: int):  # type: ignore[no-untyped-def]
    def done(records: list[KernelRecord]) -> bool:
        return any(
            isinstance(r, StateRecord) and r.newstate == TCP_CLOSE and r.sock.rport == client_port
            for r in records
        )

    return done


def test_function_adapters_produce_the_same_path_inside_vm(probes: ProbeSession) -> None:
    with tiny_server() as server:
        probes.set_targets(tgids={server.pid}, ports={server.port})
        client_port = http_exchange(server.host, server.port, requests=2, pause=0.005)
        records = collect(probes, _closed(client_port), timeout=20)
    sk = _server_sk(records, client_port)
    assert sk, records
    conn = [r for r in records if getattr(r, "sock", None) and r.sock.sk == sk]
    accepts = [r for r in records if isinstance(r, AcceptRecord) and r.pid == server.pid]
    recvs = [r for r in conn if isinstance(r, RecvRecord) and r.rx is not None]
    sends = [r for r in conn if isinstance(r, SendRecord)]
    closed = [r for r in conn if isinstance(r, StateRecord) and r.newstate == TCP_CLOSE]
    # accept4 returned once with the connection (a failed accept, -EAGAIN from the
    # non-blocking listener, makes no record).
    assert len(accepts) == 1, accepts
    (accept,) = accepts
    assert accept.fd >= 0 and accept.listen_fd >= 0 and accept.enter_ts <= accept.ts_ns
    assert len(recvs) == 2 and len(sends) == 2, (recvs, sends)
    for recv, send in zip(recvs, sends, strict=True):
        rx = recv.rx
        assert rx is not None
        assert rx.dev == ""  # the function netif_receive adapter gives up the device name
        path = [
            rx.softirq_entry_ts,
            rx.poll_start_ts,
            rx.netif_receive_ts,
            rx.tcp_ts,
            rx.data_ready_ts,
            recv.epoll_exit_ts,
            recv.enter_ts,
            recv.ts_ns,
        ]
        assert all(path) and path == sorted(path), path
        assert 0 < recv.epoll_enter_ts <= recv.epoll_exit_ts and recv.epoll_ready >= 1
        assert (recv.pid, recv.fd, recv.ret) == (server.pid, accept.fd, len(REQUEST))
        assert recv.syscall == NR_RECVFROM
        assert (send.pid, send.fd, send.ret) == (server.pid, accept.fd, len(SMALL_RESPONSE))
        assert send.syscall == NR_SENDTO
        assert send.xmit_count >= 1
        assert recv.ts_ns <= send.enter_ts <= send.xmit_first_ts <= send.ts_ns
    # The socket's state lives until the kernel destroys the socket, not merely until
    # close(): the final CLOSE still carries the cookie learnt from its traffic.
    assert len(closed) == 1, closed
    assert closed[0].sock.cookie == recvs[0].sock.cookie != 0


def test_every_socket_syscall_adapter_reports_fd_and_ret_inside_vm(
    probes: ProbeSession,
) -> None:
    """read/recvmsg/recvfrom and write/writev/sendmsg/sendto each land on their adapter."""
    receives = [
        (NR_READ, lambda s: os.read(s.fileno(), 4096)),
        (NR_RECVMSG, lambda s: s.recvmsg(4096)[0]),
        (NR_RECVFROM, lambda s: s.recv(4096)),
    ]
    sends = [
        (NR_WRITE, lambda s, d: os.write(s.fileno(), d)),
        (NR_WRITEV, lambda s, d: os.writev(s.fileno(), [d[:3], d[3:]])),
        (NR_SENDMSG, lambda s, d: s.sendmsg([d])),
        (NR_SENDTO, lambda s, d: s.send(d)),
    ]
    expected_recvs = [(nr, 11 + i) for i, (nr, _) in enumerate(receives)]
    expected_sends = [(nr, 21 + i) for i, (nr, _) in enumerate(sends)]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        probes.set_targets(tgids={os.getpid()}, ports={port})
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                fd = server.fileno()
                for (_, receive), (_, size) in zip(receives, expected_recvs, strict=True):
                    client.sendall(b"r" * size)
                    assert len(receive(server)) == size
                for (_, send), (_, size) in zip(sends, expected_sends, strict=True):
                    assert send(server, b"s" * size) == size
                    client.recv(4096)
        records = collect(probes, lambda rs: False, timeout=1.0)
    mine = sorted(
        (r for r in records if isinstance(r, RecvRecord | SendRecord) and r.fd == fd),
        key=lambda r: r.ts_ns,
    )
    assert [(r.syscall, r.ret) for r in mine if isinstance(r, RecvRecord)] == expected_recvs
    assert [(r.syscall, r.ret) for r in mine if isinstance(r, SendRecord)] == expected_sends
    for record in mine:
        assert record.pid == os.getpid() and record.sock.lport == port
        assert 0 < record.enter_ts <= record.ts_ns
        if isinstance(record, SendRecord):
            assert record.xmit_count >= 1 and record.enter_ts <= record.xmit_first_ts
