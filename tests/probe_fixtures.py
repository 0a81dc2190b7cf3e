"""Fixtures and helpers for tests that load reqtrace's probes and drive real traffic.

Traffic goes only to loopback or to a network namespace the test creates (veth pair),
which is always torn down, as are the servers and the probes, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tracer.kernel.probe_loader import ProbeSession
from tracer.records.kernel import KernelRecord

from .helpers import ROOT

TINY_SERVER = ROOT / "tests" / "probe_targets" / "tiny_http_server.py"
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
SMALL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class RunningServer:
    pid: int
    host: str
    port: int
    process: subprocess.Popen[str]


@contextlib.contextmanager
def tiny_server(host: str = "127.0.0.1", netns: str | None = None) -> Iterator[RunningServer]:
    """The tiny asyncio HTTP server in a child process (optionally inside a netns)."""
    argv = [sys.executable, str(TINY_SERVER), host, "0"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"tiny server did not start: {line!r}")
        yield RunningServer(pid=int(line[2]), host=host, port=int(line[1]), process=process)
    finally:
        process.kill()
        process.wait(timeout=10)


def read_response(client: socket.socket) -> bytes:
    """One HTTP response with a Content-Length body, read completely."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError("server closed before the response headers")
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = client.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed in the middle of the body")
        body += chunk
    return header + b"\r\n\r\n" + body


def http_exchange(
    host: str, port: int, requests: int = 1, path: str = "/", pause: float = 0.0
) -> int:
    """`requests` keep-alive requests on one connection, then a clean close.

    pause: seconds to wait before each request after the first, so the server is idle
    (asleep in epoll_wait) when it arrives. Returns the client's local port.
    """
    with socket.create_connection((host, port), timeout=10) as client:
        client_port = client.getsockname()[1]
        for number in range(requests):
            if number and pause:
                time.sleep(pause)
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            read_response(client)
        client.shutdown(socket.SHUT_WR)
        client.recv(1)  # the server's FIN
        return client_port


def collect(
    probes: ProbeSession,
    done: Callable[[list[KernelRecord]], bool],
    timeout: float = 5.0,
) -> list[KernelRecord]:
    """Poll records until `done(records)` is true or the timeout passes."""
    records: list[KernelRecord] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records.extend(probes.poll(20))
        if done(records):
            break
    records.extend(probes.drain())
    return records


@dataclass
class TestNetns:
    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str


@contextlib.contextmanager
def veth_netns(prefix: str = "rt") -> Iterator[TestNetns]:
    """A network namespace joined to this one by a veth pair (pyroute2), removed after."""
    from pyroute2 import IPRoute, NetNS, netns

    tag = f"{os.getpid() % 100000}"
    spec = TestNetns(
        name=f"{prefix}test{tag}",
        host_if=f"{prefix}h{tag}",
        ns_if=f"{prefix}n{tag}",
        host_ip="10.213.0.1",
        ns_ip="10.213.0.2",
    )
    netns.create(spec.name)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=spec.host_if, kind="veth", peer=spec.ns_if)
            host_index = ipr.link_lookup(ifname=spec.host_if)[0]
            ns_index = ipr.link_lookup(ifname=spec.ns_if)[0]
            ipr.link("set", index=ns_index, net_ns_fd=spec.name)
            ipr.addr("add", index=host_index, address=spec.host_ip, prefixlen=24)
            ipr.link("set", index=host_index, state="up")
        with NetNS(spec.name) as ns:
            index = ns.link_lookup(ifname=spec.ns_if)[0]
            ns.addr("add", index=index, address=spec.ns_ip, prefixlen=24)
            ns.link("set", index=index, state="up")
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
        yield spec
    finally:
        with contextlib.suppress(Exception), IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=spec.host_if):
                ipr.link("del", index=index)
        with contextlib.suppress(Exception):
            netns.remove(spec.name)
