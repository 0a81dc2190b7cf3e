"""The machine can do what reqtrace is built on: a tracepoint program sees real TCP traffic."""

from __future__ import annotations

import ctypes
import socket
import threading
import time

import pytest

from tracer.kernel.native_stderr import captured_native_stderr

TCP_PROBE_PROGRAM = rb"""
struct segment { u64 ts; u32 data_len; u16 sport; u16 dport; };
BPF_RINGBUF_OUTPUT(segments, 16);
TRACEPOINT_PROBE(tcp, tcp_probe) {
    struct segment *s = segments.ringbuf_reserve(sizeof(*s));
    if (!s) return 0;
    s->ts = bpf_ktime_get_ns();
    s->data_len = args->data_len;
    s->sport = args->sport;
    s->dport = args->dport;
    segments.ringbuf_submit(s, 0);
    return 0;
}
"""


class Segment(ctypes.Structure):
    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("data_len", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
    ]


@pytest.mark.bpf
def test_tcp_probe_tracepoint_sees_a_loopback_request_with_its_ports() -> None:
    from bcc import BPF

    with captured_native_stderr():
        bpf = BPF(text=TCP_PROBE_PROGRAM, cflags=["-w"])
    seen: list[Segment] = []

    def on_segment(_ctx: object, data: int, _size: int) -> None:
        seen.append(Segment.from_buffer_copy(ctypes.string_at(data, ctypes.sizeof(Segment))))

    listener = socket.create_server(("127.0.0.1", 0))
    server_port = listener.getsockname()[1]
    request = b"GET /probe HTTP/1.1\r\nHost: test\r\n\r\n"

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    try:
        bpf[b"segments"].open_ring_buffer(on_segment)
        server = threading.Thread(target=serve_one)
        server.start()
        start_ns = time.monotonic_ns()
        with socket.create_connection(("127.0.0.1", server_port)) as client:
            client_port = client.getsockname()[1]
            client.sendall(request)
            client.recv(4096)
        server.join(timeout=5)
        bpf.ring_buffer_poll(200)
    finally:
        listener.close()
        bpf.cleanup()

    ours = [s for s in seen if server_port in (s.sport, s.dport)]
    # The server socket receives the request: local port = server port, remote = client.
    request_segments = [
        s for s in ours if s.sport == server_port and s.dport == client_port and s.data_len
    ]
    assert [s.data_len for s in request_segments] == [len(request)]
    # Kernel timestamps are CLOCK_MONOTONIC, comparable with time.monotonic_ns().
    assert start_ns <= request_segments[0].ts <= time.monotonic_ns()
    # The client socket receives the response: the ports swap.
    assert any(s.sport == client_port and s.dport == server_port and s.data_len for s in ours)
