"""`reqtrace run ... --no-tui` as a test fixture: start, wait until it serves, stop cleanly."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .helpers import ROOT


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def reqtrace_run(
    *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
) -> Iterator[subprocess.Popen[str]]:
    """`reqtrace run ... --no-tui` in the background; stopped (SIGTERM) and reaped after.

    `prefix` goes before the interpreter (e.g. taskset to pin the tracer and its server).
    """
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "tracer", "run", *args, "--no-tui"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def wait_listening(
    port: int, process: subprocess.Popen[str], host: str = "127.0.0.1", timeout: float = 30
) -> None:
    """Until the traced server answers a GET / (that request is traced like any other)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"reqtrace exited early: {process.stderr.read()}")  # type: ignore[union-attr]
        try:
            connection = http.client.HTTPConnection(host, port, timeout=2)
            connection.request("GET", "/")
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the traced server never answered")


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM, wait for the drain and the report; the run must exit 0."""
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out, err
