"""`reqtrace run` end to end: a real app, real probes, real requests, a real recording."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracer.recording.raw_log import replay
from tracer.recording.reader import load_recording

from .helpers import ROOT, as_nobody
from .run_fixtures import free_port, reqtrace_run, stop, wait_listening

pytestmark = pytest.mark.bpf

FASTAPI_APP = "tests.server_apps.fastapi_app:app"
KERNEL_STAGES = {"backlog", "softirq", "ip_tcp", "wakeup"}
ALL_OBSERVED = KERNEL_STAGES | {"event_loop", "recv", "parse", "app", "send"}


def _requests(port: int) -> None:
    """A keep-alive connection with GET, path params, a JSON POST and a stream."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/items/7?q=hello")
    assert connection.getresponse().read() == b'{"item_id":7,"q":"hello"}'
    body = json.dumps({"name": "pen", "price": 2.5})
    connection.request("POST", "/items", body=body, headers={"Content-Type": "application/json"})
    assert json.loads(connection.getresponse().read())["total"] == 5.0
    connection.request("GET", "/stream", headers={"Authorization": "Bearer secret-token"})
    assert connection.getresponse().read() == b"line 0\nline 1\nline 2\nline 3\n"
    connection.close()


def test_run_traces_a_fastapi_app_into_a_complete_recording(tmp_path: Path) -> None:
    port = free_port()
    recording_path = tmp_path / "trace.jsonl"
    raw_path = tmp_path / "trace.raw.jsonl"
    with reqtrace_run(
        FASTAPI_APP,
        "--port",
        str(port),
        "--record",
        str(recording_path),
        "--record-raw",
        str(raw_path),
    ) as process:
        wait_listening(port, process)
        _requests(port)
        time.sleep(0.5)
        out, err = stop(process)

    recording = load_recording(str(recording_path))
    assert recording.footer is not None and not recording.problems
    assert recording.header and recording.header["schema"] == "reqtrace.trace/1"
    assert recording.header["probe_plan"] and recording.header["kernel"] == os.uname().release
    assert (recording.header["mode"], recording.header["server"]) == ("run", "reqtrace")
    assert oct(recording_path.stat().st_mode & 0o777) == "0o600"
    by_path = {t.path: t for t in recording.traces}
    assert {"/items/7", "/items", "/stream"} <= set(by_path)
    for path in ("/items/7", "/items", "/stream"):
        trace = by_path[path]
        assert trace.complete, (path, trace.notes)
        assert trace.status == 200
        assert trace.client[0] == "127.0.0.1" and trace.server == ("127.0.0.1", port)
        names = {s.name for s in trace.stages}
        # The loop was asleep (wakeup) or busy (loop_busy) when the data came; the app may
        # have waited for the loop (loop_queue) and the write for the send (handoff).
        required = (ALL_OBSERVED - {"wakeup"}) | ({"body"} if trace.method == "POST" else set())
        assert required <= names, (path, names, trace.notes)
        assert len(names & {"wakeup", "loop_busy"}) == 1, (path, names)
        assert names - required <= {"wakeup", "loop_busy", "loop_queue", "handoff"}, names
        starts = [s.start_ns for s in trace.stages]
        assert starts == sorted(starts)
        assert sum(s.duration_ns for s in trace.stages) == trace.total_ns  # they tile it
        # lo is a software device: the NIC interrupt stage is absent and the notes say why.
        assert any(note.startswith("nic_irq:") for note in trace.notes)
    # Credentials never reach the recording unless asked.
    assert "secret-token" not in recording_path.read_text()
    # One line per request in the --no-tui log, and a final report on stderr.
    assert "/items/7" in out and "dominant" in out
    assert "requests traced" in err and "lost" in err
    # Replaying the raw records gives exactly what the live run recorded.
    replayed = {t.id: t for t in replay(str(raw_path))}
    for trace in recording.traces:
        assert replayed[trace.id].to_json() == trace.to_json()


def test_the_app_runs_as_the_sudo_caller_not_as_root(tmp_path: Path) -> None:
    port = free_port()
    with reqtrace_run(
        "tests.server_apps.basic:app",
        "--port",
        str(port),
        env={"SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"},
    ) as process:
        wait_listening(port, process)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        uids = [
            line.split()[1:]
            for child in children
            for line in Path(f"/proc/{child}/status").read_text().splitlines()
            if line.startswith("Uid:")
        ]
        assert uids == [["65534"] * 4]
        stop(process)


def test_a_server_that_dies_is_reported_with_its_status(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracer", "run", "no_such_module_xyz:app", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1  # as `reqtrace serve` (tests/test_run_startup.py)
    assert 'Error loading ASGI app: could not import module "no_such_module_xyz"' in result.stderr
    assert "Traceback (most recent call last)" not in result.stderr


def test_max_requests_and_slower_than_bound_a_staging_run(tmp_path: Path) -> None:
    port = free_port()
    recording_path = tmp_path / "slow-only.jsonl"
    with reqtrace_run(
        "tests.server_apps.basic:app",
        "--port",
        str(port),
        "--record",
        str(recording_path),
        "--slower-than",
        "1000",
        "--max-requests",
        "5",
    ) as process:
        wait_listening(port, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(8):
            connection.request("GET", "/")
            connection.getresponse().read()
        connection.close()
        process.wait(timeout=60)  # stops by itself after 5 requests
    assert process.returncode == 0
    recording = load_recording(str(recording_path))
    assert recording.footer is not None
    assert recording.traces == []  # nothing was slower than a second
    assert recording.footer["skipped"] >= 5 and recording.footer["skipped_faster_than_ms"] == 1000


def test_without_root_run_says_so_in_one_sentence() -> None:
    result = as_nobody([sys.executable, "-m", "tracer", "run", "tests.server_apps.basic:app"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "root" in lines[0] and "sudo" in lines[0]


def _server_children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigterm_right_after_start_still_stops_cleanly(tmp_path: Path) -> None:
    """A signal that lands while the server is starting is a stop request, not a crash."""
    port = free_port()
    recording_path = tmp_path / "early.jsonl"
    with reqtrace_run(
        "tests.server_apps.basic:app", "--port", str(port), "--record", str(recording_path)
    ) as process:
        wait_listening(port, process)  # the listener exists before the server is started
        _out, err = stop(process)
    assert re.search(r"\d+ requests? traced", err)
    recording = load_recording(str(recording_path))
    assert recording.footer is not None and not recording.problems


def test_the_server_ends_when_the_tracer_is_killed() -> None:
    """SIGKILL leaves no cleanup to our code: the kernel's parent-death signal ends the child."""
    port = free_port()
    with reqtrace_run("tests.server_apps.basic:app", "--port", str(port)) as process:
        wait_listening(port, process)
        time.sleep(1.5)  # past start-up
        children = _server_children(process.pid)
        assert len(children) == 1
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{children[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{children[0]}").exists():
            os.kill(children[0], signal.SIGKILL)
            raise AssertionError("the server outlived the tracer")
