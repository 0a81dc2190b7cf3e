"""The correlator on a live run: real probes, the bundled server with its hooks, real
loopback traffic; and the replay of that run's raw-record file gives the same traces."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from tracer.correlate.correlator import Correlator
from tracer.kernel.attach_plan import ProbePlan
from tracer.kernel.probe_loader import ProbeSession
from tracer.model.stages import STAGE_NAMES
from tracer.model.trace import RequestTrace
from tracer.recording.raw_log import LoggingCorrelator, RawLogWriter, replay

from .helpers import ROOT
from .server_fixtures import running_server

pytestmark = pytest.mark.bpf

# Keep-alive requests with pauses (the loop sleeps in epoll between them), two pipelined
# requests in one write, then an upload sent in pieces; the client runs in its own process.
CLIENT = r"""
import socket, sys, time

def response(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return body[length:]

conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
for _ in range(3):
    time.sleep(0.05)
    conn.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    response(conn)
time.sleep(0.05)
conn.sendall(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n")
if not response(conn):
    response(conn)
time.sleep(0.05)
body = b"x" * 120000
conn.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
for i in range(0, len(body), 40000):
    conn.sendall(body[i : i + 40000])
    time.sleep(0.01)
response(conn)
conn.shutdown(socket.SHUT_WR)
conn.recv(1)
"""
PATHS = ["/hello", "/hello", "/hello", "/one", "/two", "/echo"]


def test_a_live_run_correlates_and_replays_exactly(
    tracepoint_plan: ProbePlan, tmp_path: Path
) -> None:
    raw = tmp_path / "run.raw.jsonl"
    correlator = LoggingCorrelator(Correlator(), RawLogWriter(str(raw)))
    traces: list[RequestTrace] = []
    with (
        running_server(hooks=True, log_level="warning", access_log=False) as server,
        ProbeSession(tracepoint_plan) as probes,
    ):
        probes.set_targets(tgids={os.getpid()}, ports={server.port})
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(server.port)], cwd=ROOT, env=os.environ.copy()
        )
        hooks_seen = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (client.poll() is None or hooks_seen < 8):
            for record in probes.poll(20):
                traces += correlator.feed(record)
            for record in server.records[hooks_seen:]:  # filled by the server's loop thread
                traces += correlator.feed(record)
                hooks_seen += 1
            traces += correlator.advance(time.monotonic_ns())
        assert client.wait(5) == 0
        for record in probes.drain():
            traces += correlator.feed(record)
        if probes.lost_records():
            correlator.note_lost_records(sum(probes.lost_records().values()))
    traces += correlator.flush()
    correlator.writer.close()

    assert sorted(t.path for t in traces) == sorted(PATHS)
    by_path = {t.path: t for t in traces}
    for trace in traces:
        names = [s.name for s in trace.stages]
        assert [n for n in STAGE_NAMES if n in names] == names
        assert all(a.end_ns <= b.start_ns for a, b in pairwise(trace.stages))
        assert {"parse", "app", "send"} <= set(names), trace.notes
        if trace.path != "/two":
            assert {"wakeup", "event_loop", "recv"} <= set(names), trace.notes
        assert trace.client[0] == "127.0.0.1" and trace.server[1] == server.port
    assert by_path["/two"].notes[0].startswith("pipelined: arrived in the same read")
    assert by_path["/echo"].details["recv_calls"] >= 2
    assert by_path["/echo"].details["request_body_bytes"] == 120000
    assert by_path["/hello"].connection.handshake_us is not None

    replayed = replay(str(raw))
    assert [t.to_json() for t in replayed] == [t.to_json() for t in traces]
