"""`reqtrace demo` in a real terminal (tmux), the moments around the dashboard (issue 16):
before it takes the screen, the terminal says what is being done (never a blank screen while
probes compile); after Ctrl-C the terminal is given back at once and says what is still
happening (stopping the server, detaching the probes) before the command ends."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from .helpers import ROOT
from .test_demo_terminal import Tmux, _wait_for, tmux  # noqa: F401  (the fixture)

pytestmark = pytest.mark.bpf


def test_demo_says_what_it_does_before_and_after_the_dashboard(
    tmux: Tmux,  # noqa: F811
    tmp_path: Path,
) -> None:
    status_file = tmp_path / "status"
    command = (
        f"cd {shlex.quote(str(ROOT))} && env -u COLUMNS -u LINES"
        f" REQTRACE_CACHE_DIR={shlex.quote(str(tmp_path / 'cache'))}"  # cold: the slow start
        f" {shlex.quote(sys.executable)} -m tracer demo --duration 90; "
        f"echo $? > {shlex.quote(str(status_file))}; sleep 30"
    )
    tmux("new-session", "-d", "-s", "demo", "-x", "120", "-y", "40", command)

    early = _wait_for(
        lambda screen: "reqtrace: trying the attach strategies" in screen,
        "a progress line while the probes are prepared",
        tmux,
        30,
    )
    assert "reqtrace: checked: can trace here" in early
    assert "reqtrace: app imported" in early
    _wait_for(lambda screen: "req/s" in screen, "the dashboard", tmux, 60)

    tmux("send-keys", "-t", "demo", "C-c")
    pressed = time.monotonic()
    seen: dict[str, float] = {}
    while not status_file.exists() and time.monotonic() - pressed < 40:
        screen = tmux.screen()
        for needle in ("reqtrace: stopping:", "reqtrace: detaching the probes"):
            if needle in screen and needle not in seen:
                seen[needle] = time.monotonic() - pressed
        time.sleep(0.05)
    ended = time.monotonic() - pressed
    print(f"after Ctrl-C: {seen} (seconds), command ended after {ended:.2f} s")
    assert status_file.read_text().strip() == "0"
    # The terminal was back, telling what still happened, before the command ended.
    assert set(seen) == {"reqtrace: stopping:", "reqtrace: detaching the probes"}
    assert seen["reqtrace: stopping:"] < ended
    final = tmux.screen()
    assert "reqtrace: stopping: the dashboard was closed" in final
    assert "requests traced" in final
