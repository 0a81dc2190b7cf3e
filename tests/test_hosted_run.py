"""`reqtrace run --server uvicorn|gunicorn`: the app's own server, real probes, real requests.

Each run serves a FastAPI app that sleeps a known time; every request made must come back
as one complete trace, its app stage must hold the sleep, and its stages must be those the
bundled server's run of the same traffic shows (leaving out the stages that depend on how
the event loop happened to be busy: wakeup or loop_busy, loop_queue, handoff, startup).
uvicorn is run at the newest version (reqtrace's environment) and the oldest reqtrace hooks
into (a second environment from scripts/setup, given with --python), with httptools and
h11; gunicorn with two uvicorn workers, one of them killed mid-run: its replacement is
traced too, and each trace names the worker that served it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer.recording.raw_log import replay
from tracer.recording.reader import Recording, load_recording

from .helpers import ROOT
from .run_fixtures import free_port, reqtrace_run, stop, wait_listening

pytestmark = pytest.mark.bpf

APP = "tests.server_apps.fastapi_sleep_app:app"
SLEEP_MS = 40.0
SLEEPS = 4
TIMING_LUCK = {"wakeup", "loop_busy", "loop_queue", "handoff", "startup"}
OLDEST_VENV = Path(os.environ.get("REQTRACE_OLDEST_UVICORN_VENV", ROOT / ".venv-uvicorn-oldest"))


def _keep_alive_traffic(port: int) -> Counter[str]:
    """Sleeps, a JSON POST and a hello on one keep-alive connection; the paths requested."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(SLEEPS):
        connection.request("GET", f"/sleep?ms={SLEEP_MS:g}")
        assert json.loads(connection.getresponse().read()) == {"slept_ms": SLEEP_MS}
    body = json.dumps({"name": "pen", "price": 2.5})
    connection.request("POST", "/items", body=body, headers={"Content-Type": "application/json"})
    assert json.loads(connection.getresponse().read()) == {"total": 5.0}
    connection.request("GET", "/hello")
    assert connection.getresponse().read() == b'{"hello":"world"}'
    connection.close()
    return Counter({"/sleep": SLEEPS, "/items": 1, "/hello": 1})


def _worker_of_new_connection(port: int) -> tuple[int, int]:
    """GET /pid on a new connection: (the client's port, the pid that answered)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/pid")
    pid = json.loads(connection.getresponse().read())["pid"]
    client_port = connection.sock.getsockname()[1]
    connection.close()
    return client_port, pid


def _traced_run(
    tmp_path: Path, *args: str, traffic: object = None
) -> tuple[Recording, str, object]:
    """A whole run: start, wait until it serves (one GET /), traffic, stop; its recording."""
    port = free_port()
    recording_path = tmp_path / "trace.jsonl"
    argv = [arg.replace("{port}", str(port)) for arg in args]
    extra: object = None
    with reqtrace_run(*argv, "--record", str(recording_path)) as process:
        wait_listening(port, process)
        made = _keep_alive_traffic(port)
        if callable(traffic):
            extra = traffic(port)
        time.sleep(0.5)
        _, err = stop(process)
    recording = load_recording(str(recording_path))
    assert recording.footer is not None and not recording.problems
    traced = Counter(trace.path for trace in recording.traces if trace.path != "/pid")
    assert traced == made + Counter({"/": 1}), err  # every request made, traced once
    return recording, err, extra


def _checked_stages(recording: Recording) -> dict[str, set[str]]:
    """Per path, the stages every one of its requests has (timing luck left out); asserts
    that every request is complete and each /sleep's app stage holds the sleep."""
    common: dict[str, set[str]] = {}
    app_ms = []
    for trace in recording.traces:
        assert trace.complete and trace.status in (200, 404), (trace.path, trace.notes)
        names = {stage.name for stage in trace.stages}
        if trace.path == "/sleep":
            (app,) = [stage for stage in trace.stages if stage.name == "app"]
            app_ms.append((app.end_ns - app.start_ns) / 1e6)
        if trace.path in ("/sleep", "/items", "/hello"):
            kept = names - TIMING_LUCK
            common[trace.path] = common.get(trace.path, kept) & kept
    # Never shorter than the sleep, but for the event loop's timer: uvloop's (libuv's) counts
    # whole milliseconds from a clock read once per loop iteration, so a sleep may end up to
    # a millisecond early (one came out at 39.80 ms). The median within a few ms of it (a
    # busy 2-core machine may stretch one of them).
    assert min(app_ms) >= SLEEP_MS - 1 and statistics.median(app_ms) < SLEEP_MS + 10, app_ms
    return common


@pytest.fixture(scope="module")
def bundled_stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The same traffic served by reqtrace's own server."""
    recording, _, _ = _traced_run(tmp_path_factory.mktemp("bundled"), APP, "--port", "{port}")
    stages = _checked_stages(recording)
    assert {"parse", "app", "send", "recv", "ip_tcp"} <= stages["/sleep"]
    assert "body" in stages["/items"]
    return stages


@pytest.mark.parametrize(
    ("environment", "http"),
    [("newest", "httptools"), ("newest", "h11"), ("oldest", "httptools"), ("oldest", "h11")],
)
def test_uvicorn_run_traces_the_same_stages_as_the_bundled_server(
    environment: str, http: str, tmp_path: Path, bundled_stages: dict[str, set[str]]
) -> None:
    python = []
    if environment == "oldest":
        if not (OLDEST_VENV / "bin" / "python").exists():
            pytest.skip(f"no {OLDEST_VENV}: run scripts/setup")
        python = ["--python", str(OLDEST_VENV)]
    recording, err, _ = _traced_run(
        tmp_path, *python, "--server", "uvicorn", APP, "--port", "{port}", "--http", http
    )
    assert "under uvicorn" in err and "kernel only" not in err, err
    assert _checked_stages(recording) == bundled_stages
    assert {trace.pid for trace in recording.traces} == {recording.header["server_pid"]}


def test_uvicorns_own_400_is_traced_like_the_bundled_servers(tmp_path: Path) -> None:
    """A malformed request never reaches the app: uvicorn answers 400 itself. It is traced
    as a request the server refused, with the kernel's side of it."""
    port = free_port()
    recording_path = tmp_path / "trace.jsonl"
    with reqtrace_run(
        "--server", "uvicorn", APP, "--port", str(port), "--record", str(recording_path)
    ) as process:
        wait_listening(port, process)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n")
            answer = client.recv(4096)
        time.sleep(0.5)
        _, err = stop(process)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    recording = load_recording(str(recording_path))
    [refused] = [trace for trace in recording.traces if trace.status == 400]
    assert refused.outcome == "bad_request", (refused.notes, err)
    names = {stage.name for stage in refused.stages}
    assert {"ip_tcp", "recv"} <= names and "app" not in names, names
    assert sum(stage.duration_ns for stage in refused.stages) == refused.total_ns


def _restart_a_worker(port: int) -> dict[int, int]:
    """Both workers answer; one is killed; its replacement answers. {client port: pid}."""
    served: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while len(set(served.values())) < 2 and time.monotonic() < deadline:
        client_port, pid = _worker_of_new_connection(port)
        served[client_port] = pid
    first = set(served.values())
    assert len(first) == 2, served
    os.kill(min(first), signal.SIGTERM)
    while time.monotonic() < deadline:
        client_port, pid = _worker_of_new_connection(port)
        served[client_port] = pid
        if pid not in first:
            break
        time.sleep(0.05)
    assert set(served.values()) - first, "gunicorn never answered from a new worker"
    return served


def test_gunicorn_workers_are_followed_and_named(
    tmp_path: Path, bundled_stages: dict[str, set[str]]
) -> None:
    recording, err, served = _traced_run(
        tmp_path,
        "--server",
        "gunicorn",
        APP,
        "-w",
        "2",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "--bind",
        "127.0.0.1:{port}",
        traffic=_restart_a_worker,
    )
    assert isinstance(served, dict)
    assert _checked_stages(recording) == bundled_stages
    by_client = {trace.client[1]: trace for trace in recording.traces if trace.path == "/pid"}
    assert set(by_client) == set(served), err  # every /pid request traced
    for client_port, pid in served.items():
        assert by_client[client_port].pid == pid  # the worker that answered
    assert len(set(served.values())) == 3  # two workers, then the replacement


@pytest.fixture
def oldest_is_newer_than_installed(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The child's version check, monkeypatched at its interpreter's start (sitecustomize)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import tracer.hosted.uvicorn_support as support\nsupport.OLDEST = (99, 0, 0)\n"
    )
    yield {"PYTHONPATH": str(tmp_path)}


def test_unsupported_uvicorn_is_said_and_traced_from_the_kernel(
    tmp_path: Path, oldest_is_newer_than_installed: dict[str, str]
) -> None:
    port = free_port()
    recording_path, raw_path = tmp_path / "trace.jsonl", tmp_path / "trace.raw.jsonl"
    with reqtrace_run(
        "--server",
        "uvicorn",
        APP,
        "--port",
        str(port),
        "--record",
        str(recording_path),
        "--record-raw",
        str(raw_path),
        env=oldest_is_newer_than_installed,
    ) as process:
        wait_listening(port, process)
        made = _keep_alive_traffic(port)
        time.sleep(0.5)
        _, err = stop(process)
    assert "is older than 99.0.0, the oldest reqtrace hooks into" in err, err
    assert "tracing from the kernel only, as reqtrace attach does" in err, err
    recording = load_recording(str(recording_path))
    assert "no reqtrace hooks" in recording.header["unavailable"]
    traced = Counter(trace.path for trace in recording.traces)
    assert traced == made + Counter({"/": 1}), err  # still every request, from the kernel
    for trace in recording.traces:
        names = {stage.name for stage in trace.stages}
        assert trace.complete and {"ip_tcp", "recv", "server", "send"} <= names, names
        assert not names & {"parse", "app", "loop_queue"}, names
        if trace.path == "/sleep":  # the server stage holds the app's sleep
            (server,) = [stage for stage in trace.stages if stage.name == "server"]
            assert server.end_ns - server.start_ns >= SLEEP_MS * 1e6
    # the raw records replay, by the kernel-only correlator its header names, to the same
    replayed = sorted(replay(str(raw_path)), key=lambda t: t.start_ns)
    live = sorted(recording.traces, key=lambda t: t.start_ns)
    assert [(t.path, t.stages) for t in replayed] == [(t.path, t.stages) for t in live]
