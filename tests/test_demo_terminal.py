"""`reqtrace demo` in a real terminal (tmux): the screen fills, Ctrl-C exits cleanly.

This is the README's main-job command as a newcomer runs it. The Pilot and snapshot tests
cover the widgets; this one covers what only a real pty shows: the app starts in a
terminal, live requests and a waterfall appear, Ctrl-C (a key in raw mode, not a signal)
stops the run, the recording gets its footer and the exit status is 0. At 80x24 (a default
terminal) the list, the selected request's waterfall and the one-line lesson all show.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import ROOT

pytestmark = pytest.mark.bpf

WIDTH, HEIGHT = 160, 45


class Tmux:
    """A private tmux server (its own socket), killed whatever happens."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=10, check=True
        )
        return result.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "demo")

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10, check=False)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if subprocess.run(["which", "tmux"], capture_output=True, check=False).returncode:
        pytest.fail("tmux is missing: scripts/setup installs it")
    server = Tmux(f"reqtrace-test-{os.getpid()}")
    try:
        yield server
    finally:
        server.kill()


def _wait_for(condition: object, what: str, tmux: Tmux, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if condition(screen):  # type: ignore[operator]
            return screen
        time.sleep(0.5)
    raise AssertionError(f"{what} never appeared; the screen was:\n{screen}")


def _shows_requests_and_a_waterfall(screen: str) -> bool:
    rows = [line for line in screen.splitlines() if line[13:20].strip() in {"GET", "POST"}]
    waterfall = all(f" {stage} " in screen for stage in ("softirq", "wakeup", "recv", "app"))
    return len(rows) >= 5 and waterfall and "kernel" in screen and "µs" in screen


def _start_demo(tmux: Tmux, tmp_path: Path, width: int, height: int) -> tuple[Path, Path]:
    recording = tmp_path / "demo.jsonl"
    status_file = tmp_path / "status"
    command = (
        f"cd {shlex.quote(str(ROOT))} && env -u COLUMNS -u LINES "
        f"{shlex.quote(sys.executable)} -m tracer demo "
        f"--duration 90 --record {shlex.quote(str(recording))}; "
        f"echo $? > {shlex.quote(str(status_file))}"
    )
    tmux("new-session", "-d", "-s", "demo", "-x", str(width), "-y", str(height), command)
    return recording, status_file


def _stop_with_ctrl_c(tmux: Tmux, status_file: Path) -> None:
    tmux("send-keys", "-t", "demo", "C-c")
    deadline = time.monotonic() + 40
    while not status_file.exists() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert status_file.exists(), f"Ctrl-C did not end the demo:\n{tmux.screen()}"
    assert status_file.read_text().strip() == "0"


def _fits_80x24(screen: str) -> bool:
    """List rows, the waterfall of the selected request and the one-line lesson."""
    lines = screen.splitlines()
    rows = [line for line in lines if line[13:].split()[:1] in (["GET"], ["POST"])]
    waterfall = all(f" {stage} " in screen for stage in ("softirq", "recv", "app"))
    lesson = any("% of the request" in line for line in lines)
    return len(rows) >= 4 and waterfall and lesson and "req/s" in screen


def test_demo_at_80x24_shows_list_waterfall_and_lesson(tmux: Tmux, tmp_path: Path) -> None:
    _, status_file = _start_demo(tmux, tmp_path, 80, 24)
    screen = _wait_for(_fits_80x24, "list, waterfall and lesson at 80x24", tmux, 60)
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert "reqtrace" in lines[0]
    _stop_with_ctrl_c(tmux, status_file)


def test_demo_in_a_real_terminal(tmux: Tmux, tmp_path: Path) -> None:
    # Bounded even if Ctrl-C were ignored: the demo stops itself after 90 s.
    # COLUMNS/LINES (pytest's own terminal size may be in the environment) would override the
    # pane's real size in Textual.
    recording, status_file = _start_demo(tmux, tmp_path, WIDTH, HEIGHT)

    screen = _wait_for(_shows_requests_and_a_waterfall, "requests and a waterfall", tmux, 60)
    assert "reqtrace" in screen.splitlines()[0] and "tracer.demo.app" in screen.splitlines()[0]
    assert "lost 0" in screen

    _stop_with_ctrl_c(tmux, status_file)

    lines = recording.read_text().splitlines()
    header, footer = json.loads(lines[0]), json.loads(lines[-1])
    assert header["type"] == "header" and footer["type"] == "footer"
    assert footer["requests"] == len(lines) - 2 >= 5
    assert oct(recording.stat().st_mode & 0o777) == "0o600"
