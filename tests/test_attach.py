"""`reqtrace attach --pid PID`: servers already running, traced from the kernel alone.

Real servers (uvicorn, and Python's thread-per-request http.server), real traffic over
loopback, real probes: every request is traced with its method and path, the kernel
stages and the `server` stage are there and fit inside what the client measured, the
report, export and explain work on the recording, and nothing stays attached afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tracer.correlate.kernel_only import ATTACH_NOTE, BLOCKING_NOTE, NO_LOOP_NOTE
from tracer.model.trace import RequestTrace
from tracer.recording.raw_log import replay
from tracer.recording.reader import load_recording

from .helpers import ROOT
from .otlp_receiver import otlp_receiver
from .run_fixtures import free_port

pytestmark = pytest.mark.bpf

KERNEL_STAGES = {"backlog", "softirq", "ip_tcp"}
UVICORN_APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if "=" in p)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await asyncio.sleep(int(query.get("ms", "0")) / 1000)
    await send({"type": "http.response.start", "status": int(query.get("status", "200")),
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"x" * int(query.get("size", "5"))})
"""


@contextmanager
def server(argv: list[str], port: int, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    # its own process group: gunicorn's workers go with the master, whatever the test did
    process = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start: {argv}") from None
                time.sleep(0.05)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def attached(pid: int, record: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`reqtrace attach --pid PID --no-tui --record FILE`, until it says it is attached."""
    argv = ["attach", "--pid", str(pid), "--no-tui", "--record", str(record), *extra]
    process = subprocess.Popen(
        [sys.executable, "-m", "tracer", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("reqtrace: attached to"):
                break
        else:
            raise AssertionError(f"attach failed: {process.communicate()}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def program_ids(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds (its fds' prog_id lines)."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue
        ids.update(int(m) for m in re.findall(r"^prog_id:\s+(\d+)", text, re.MULTILINE))
    return ids


def loaded(prog_id: int) -> bool:
    result = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True)
    return result.returncode == 0


def stop_attach(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def timed_get(
    connection: http.client.HTTPConnection,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> float:
    """One request on a keep-alive connection; the client's own latency in ns."""
    started = time.monotonic_ns()
    connection.request("POST" if body else "GET", path, body=body or None, headers=headers or {})
    response = connection.getresponse()
    response.read()
    return time.monotonic_ns() - started


def check_trace_fits(trace: RequestTrace, client_ns: float) -> None:
    names = {stage.name for stage in trace.stages}
    assert names >= KERNEL_STAGES, names
    assert {"recv", "server", "send"} <= names, names
    assert not names & {"parse", "app", "loop_queue"}
    assert ATTACH_NOTE in trace.notes
    server_stage = trace.stage("server")
    assert 0 < server_stage.duration_ns < client_ns
    assert trace.total_ns < client_ns
    cursor = trace.start_ns
    for stage in trace.stages:
        assert stage.start_ns == cursor
        cursor = stage.end_ns


def test_attach_to_a_running_uvicorn(tmp_path: Path) -> None:
    (tmp_path / "attach_app.py").write_text(UVICORN_APP)
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "attach_app:app", "--port", str(port)]
    record = tmp_path / "uvicorn.jsonl"
    with server([*argv, "--log-level", "warning"], port, tmp_path) as target:
        with attached(target.pid, record) as tracer:
            ids = program_ids(tracer.pid)
            assert ids and all(loaded(i) for i in ids)
            keep_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            latencies = [timed_get(keep_alive, f"/sleep?ms={ms}") for ms in (20, 5, 20)]
            latencies.append(timed_get(keep_alive, "/upload", b"u" * 200_000))
            latencies.append(timed_get(keep_alive, "/large?size=3000000&status=201"))
            keep_alive.close()
            fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            latencies.append(timed_get(fresh, "/missing?status=404"))
            fresh.close()
            time.sleep(0.6)  # the last request settles
            code, err = stop_attach(tracer)
        assert code == 0, err
        assert "6 requests traced" in err
    deadline = time.monotonic() + 10
    while any(loaded(i) for i in ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(loaded(i) for i in ids), "programs left attached after the attach ended"

    recording = load_recording(str(record))
    header = recording.header or {}
    assert header["mode"] == "attach" and header["server"].startswith(f"pid {target.pid} (")
    assert header["address"] == f"http://127.0.0.1:{port}"
    traces = sorted(recording.traces, key=lambda t: t.start_ns)
    assert [(t.method, t.path, t.status) for t in traces] == [
        ("GET", "/sleep", 200),
        ("GET", "/sleep", 200),
        ("GET", "/sleep", 200),
        ("POST", "/upload", 200),
        ("GET", "/large", 201),
        ("GET", "/missing", 404),
    ]
    assert traces[0].query == "ms=20" and traces[0].http_version == "1.1"
    for trace, client_ns in zip(traces, latencies, strict=True):
        check_trace_fits(trace, client_ns)
    assert traces[0].stage("server").duration_ns >= 20_000_000
    assert traces[1].stage("server").duration_ns < traces[0].stage("server").duration_ns
    assert traces[3].details["recv_bytes"] >= 200_000
    assert traces[4].details["send_bytes"] >= 3_000_000
    assert len({t.conn_id for t in traces[:5]}) == 1 and traces[5].conn_id != traces[0].conn_id
    assert traces[5].connection.handshake_us is not None
    assert any(t.stage("event_loop") or t.stage("loop_busy") for t in traces)
    _downstream_works(record, tmp_path)


def _downstream_works(record: Path, tmp_path: Path) -> None:
    """report, export and explain read an attach recording like any other."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracer", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    report = cli("report", str(record), "--json")
    assert report.returncode == 0, report.stderr
    stages = json.loads(report.stdout)["stages"]
    assert stages["server"]["count"] == 6 and "app" not in stages
    perfetto = tmp_path / "trace.json"
    assert cli("export", str(record), "--format", "perfetto", "-o", str(perfetto)).returncode == 0
    assert any(e.get("name") == "server" for e in json.loads(perfetto.read_text())["traceEvents"])
    explain = cli("explain", str(record), "--slowest")
    assert explain.returncode == 0, explain.stderr
    assert "mode attach" in explain.stdout and "server" in explain.stdout
    assert "not observable without reqtrace's hooks" in explain.stdout
    html = tmp_path / "report.html"
    assert cli("report", str(record), "--html", "-o", str(html)).returncode == 0


def test_attach_to_a_thread_per_request_http_server(tmp_path: Path) -> None:
    """Also the outputs `run` has: the raw records replay to the same traces, and every
    request goes to an OTLP receiver as spans."""
    (tmp_path / "index.html").write_text("hello\n")
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    record, raw = tmp_path / "http_server.jsonl", tmp_path / "http_server.raw.jsonl"
    outputs = ["--record-raw", str(raw), "--otlp-service-name", "legacy"]
    with (
        otlp_receiver() as receiver,
        server(argv, port, tmp_path) as target,
        attached(target.pid, record, *outputs, "--otlp-endpoint", receiver.url) as tracer,
    ):
        latencies = []
        for path in ("/index.html", "/missing", "/"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Cookie": "session=secret"}
            latencies.append(timed_get(connection, path, headers=headers))
            connection.close()
        time.sleep(0.6)
        code, err = stop_attach(tracer)
        spans = receiver.spans()
    assert code == 0, err
    recording = load_recording(str(record))
    traces = sorted(recording.traces, key=lambda t: t.start_ns)
    assert [(t.method, t.path, t.status) for t in traces] == [
        ("GET", "/index.html", 200),
        ("GET", "/missing", 404),
        ("GET", "/", 200),
    ]
    for trace, client_ns in zip(traces, latencies, strict=True):
        check_trace_fits(trace, client_ns)
        assert trace.stage("event_loop") is None  # no epoll: a thread per connection
        assert BLOCKING_NOTE in trace.notes or NO_LOOP_NOTE in trace.notes
        assert trace.tid != trace.pid  # served by a request thread

    assert "secret" not in raw.read_text()
    replayed = sorted(replay(str(raw)), key=lambda t: t.start_ns)
    assert [t.stages for t in replayed] == [t.stages for t in traces]
    assert [(t.method, t.path, t.status) for t in replayed] == [
        (t.method, t.path, t.status) for t in traces
    ]

    assert recording.footer is not None and recording.footer["otlp_exported"] == 3
    assert "3 exported over OTLP, 0 OTLP drops" in err
    requests = [span for span in spans if span.span.kind == span.span.SPAN_KIND_SERVER]
    assert sorted(span.name for span in requests) == ["GET /", "GET /index.html", "GET /missing"]
    assert {span.resource["service.name"] for span in spans} == {"legacy"}
    assert len(spans) == sum(1 + len(trace.stages) for trace in traces)


def _worker_pids(master: int) -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(master).children()}


def _new_connection_gets(port: int, path: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        return timed_get(connection, path)
    finally:
        connection.close()


def test_attach_to_gunicorn_follows_its_workers_even_a_restarted_one(tmp_path: Path) -> None:
    """Attached to gunicorn's master: the workers' requests are traced, and a worker
    gunicorn starts after one was killed is put in the filters within a second or two."""
    (tmp_path / "attach_app.py").write_text(UVICORN_APP)
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "attach_app:app", "-w", "2", "-b"]
    argv += [f"127.0.0.1:{port}", "-k", "uvicorn.workers.UvicornWorker", "--log-level", "warning"]
    record = tmp_path / "gunicorn.jsonl"
    with server(argv, port, tmp_path) as master, attached(master.pid, record) as tracer:
        deadline = time.monotonic() + 20
        while len(_worker_pids(master.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first_workers = _worker_pids(master.pid)
        for number in range(6):
            _new_connection_gets(port, f"/before?n={number}")
        victim = min(first_workers)
        os.kill(victim, signal.SIGKILL)
        while time.monotonic() < deadline:
            workers = _worker_pids(master.pid)
            if len(workers) == 2 and victim not in workers:
                break
            time.sleep(0.1)
        replacement = (workers - first_workers).pop()
        survivor = (first_workers - {victim}).pop()
        time.sleep(2.5)  # the attach looks at the process tree once a second
        os.kill(survivor, signal.SIGSTOP)  # every new connection goes to the replacement
        try:
            for number in range(12):
                _new_connection_gets(port, f"/after?n={number}")
        finally:
            os.kill(survivor, signal.SIGCONT)
        time.sleep(0.6)
        code, err = stop_attach(tracer)
    assert code == 0, err
    traces = load_recording(str(record)).traces
    before = [t for t in traces if t.path == "/before"]
    after = [t for t in traces if t.path == "/after"]
    assert len(before) == 6 and len(after) == 12
    assert {t.pid for t in before} <= first_workers
    assert {t.pid for t in after} == {replacement}
    assert all(t.stage("server") is not None for t in traces)


def test_the_target_exiting_ends_the_attach_plainly(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with (
        server(argv, port, tmp_path) as target,
        attached(target.pid, tmp_path / "gone.jsonl") as tracer,
    ):
        ids = program_ids(tracer.pid)
        target.kill()
        _, err = tracer.communicate(timeout=60)
        assert tracer.returncode == 1, err
    assert f"the server (pid {target.pid} (" in err and "exited" in err
    assert not any(loaded(i) for i in ids)
    footer = load_recording(str(tmp_path / "gone.jsonl")).footer or {}
    assert footer.get("target_exited") is True


def test_a_process_without_a_listening_socket_is_refused() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tracer", "attach", "--pid", str(sleeper.pid), "--no-tui"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 2
    assert f"pid {sleeper.pid} (sleep) listens on no TCP port" in result.stderr
    assert "--port" in result.stderr
