"""Lifespan, graceful shutdown on signals, exit codes, app loading and the `serve` CLI."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.server_apps import lifespan_apps
from tests.server_fixtures import build_request, running_server, spawned_server
from tracer.server.config import Config, add_server_arguments, config_from_args
from tracer.server.main import Server


def test_lifespan_state_is_copied_into_each_request() -> None:
    lifespan_apps.EVENTS.clear()
    with running_server("tests.server_apps.lifespan_apps:with_state") as server:
        assert lifespan_apps.EVENTS == ["startup"]
        with server.connect() as connection:
            first = json.loads(connection.request().body)
            second = json.loads(connection.request().body)
    assert first == {"db": "connected", "leaked": False}
    assert second == {"db": "connected", "leaked": False}  # a shallow copy per request
    assert lifespan_apps.EVENTS == ["startup", "shutdown"]


def test_lifespan_auto_tolerates_apps_without_lifespan() -> None:
    app = "tests.server_apps.lifespan_apps:startup_raises"
    with running_server(app) as server, server.connect() as connection:
        assert connection.request().body == b"served"


def test_lifespan_off_never_calls_the_app_for_lifespan() -> None:
    lifespan_apps.EVENTS.clear()
    with running_server("tests.server_apps.lifespan_apps:startup_raises", lifespan="off"):
        pass
    with running_server(lifespan_apps.with_state, lifespan="off"):
        assert lifespan_apps.EVENTS == []


@pytest.mark.parametrize(
    ("app", "lifespan", "message"),
    [
        ("startup_fails", "auto", "database is unreachable"),
        ("startup_raises", "on", "Exception in 'lifespan' protocol"),
    ],
)
def test_startup_failure_exits_non_zero(app: str, lifespan: str, message: str) -> None:
    with spawned_server(
        "--lifespan", lifespan, app=f"tests.server_apps.lifespan_apps:{app}", expect_start=False
    ) as server:
        code = server.process.wait(20)
        output = server.output()
    assert code == 3
    assert message in output
    assert "Application startup failed. Exiting." in output
    assert "Listening on" not in output


def test_sigterm_drains_in_flight_request_and_exits_zero(tmp_path: Path) -> None:
    log = tmp_path / "lifespan.log"
    with spawned_server(
        app="tests.server_apps.lifespan_apps:with_state",
        env={"REQTRACE_TEST_LIFESPAN_LOG": str(log)},
    ) as server:
        with server.connect() as idle, server.connect() as busy:
            assert idle.request().status == 200
            # with_state answers at once; use a pipelined pair to have work in flight
            busy.send(build_request() + build_request())
            server.process.send_signal(signal.SIGTERM)
            assert busy.read_response().status == 200
            assert idle.is_closed()
        code = server.process.wait(20)
        output = server.output()
    assert code == 0
    assert "Shutting down (SIGTERM)" in output
    assert log.read_text().split() == ["startup", "shutdown"]


def test_sigint_waits_for_a_slow_request() -> None:
    with spawned_server() as server, server.connect() as connection:
        connection.send(build_request(target="/slow?s=1.0&tag=finished"))
        time.sleep(0.3)
        server.process.send_signal(signal.SIGINT)
        response = connection.read_response()
        assert response.body == b"finished"
        assert response.header("connection") == "close"  # no keep-alive while stopping
        assert server.process.wait(20) == 0


def test_graceful_timeout_cancels_what_is_left() -> None:
    with spawned_server("--timeout-graceful-shutdown", "0.5") as server:
        with server.connect() as connection:
            connection.send(build_request(target="/slow?s=30"))
            time.sleep(0.3)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(20) == 0
            assert time.monotonic() - started < 15
            assert connection.is_closed()
        assert "still busy after the graceful timeout" in server.output()


def test_second_signal_forces_shutdown() -> None:
    with spawned_server("--timeout-graceful-shutdown", "60") as server:
        with server.connect() as connection:
            connection.send(build_request(target="/slow?s=60"))
            time.sleep(0.3)
            server.process.send_signal(signal.SIGINT)
            time.sleep(0.3)
            server.process.send_signal(signal.SIGINT)
            assert server.process.wait(20) == 0
        assert "not waiting for requests in flight" in server.output()


def test_request_shutdown_from_another_thread_returns_zero() -> None:
    with running_server() as server, server.connect() as connection:
        assert connection.request().status == 200
    assert server.exit_code == [0]


def test_access_log_goes_to_stdout_in_uvicorn_format() -> None:
    with spawned_server() as server:
        with server.connect() as connection:
            connection.request(target="/echo?x=1")
        assert server.stop() == 0
        time.sleep(0.1)
        stdout = "".join(server.stdout_lines)
        assert '"GET /echo?x=1 HTTP/1.1" 200' in stdout
        assert "INFO:     127.0.0.1:" in stdout
        assert "Listening on" not in stdout  # lifecycle messages go to stderr


def test_no_access_log() -> None:
    with spawned_server("--no-access-log") as server:
        with server.connect() as connection:
            connection.request()
        server.stop()
        assert "".join(server.stdout_lines) == ""


# App loading ----------------------------------------------------------------------------
def _serve(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracer", "serve", *args, "--port", "0"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_such_module:app", 'could not import module "no_such_module"'),
        ("tests.server_apps.basic:nope", 'attribute "nope" not found'),
        ("tests.server_apps.basic", 'APP must look like "module:attribute"'),
    ],
)
def test_bad_app_exits_1_with_a_clear_message(app: str, message: str) -> None:
    result = _serve(app)
    assert result.returncode == 1
    assert message in result.stderr


def test_factory_and_app_dir(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'from app-dir'})\n"
        "def make():\n"
        "    return app\n"
    )
    server_context = running_server("myapp:make", factory=True, app_dir=str(tmp_path))
    with server_context as server, server.connect() as connection:
        assert connection.request().body == b"from app-dir"


def test_serve_help_lists_uvicorn_flag_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracer", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for flag in (
        "--host",
        "--port",
        "--uds",
        "--app-dir",
        "--factory",
        "--root-path",
        "--lifespan",
        "--loop",
        "--timeout-keep-alive",
        "--limit-concurrency",
        "--backlog",
        "--log-level",
        "--access-log",
        "--no-access-log",
        "--timeout-graceful-shutdown",
    ):
        assert flag in result.stdout, flag


def test_inherited_listening_socket() -> None:
    """--fd: `reqtrace run` binds the socket itself and hands the fd to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    try:
        with running_server(fd=os.dup(sock.fileno())) as server:  # the server owns its fd
            assert server.port == port
            with server.connect() as connection:
                assert connection.request().status == 200
    finally:
        sock.close()


def test_fd_flag_reaches_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    config = config_from_args(parser.parse_args(["app:app", "--fd", "7", "--port", "0"]))
    assert config.fd == 7


def test_bind_failure_exits_1() -> None:
    with running_server() as first:
        server = Server(Config(app="tests.server_apps.basic:app", port=first.port, loop="asyncio"))
        assert server.run() == 1
