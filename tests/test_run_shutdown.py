"""How `reqtrace run` ends (issue 16): no client left hanging, in-flight requests finish,
the reason is said, and the server does not outlive a killed tracer.

Behaviour, not speed: a client that connects while the run stops is refused or served,
never left waiting (a timeout is the failure); after `kill -9` of the tracer the server stops
without waiting for the request it was serving.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .helpers import ROOT
from .run_fixtures import free_port, reqtrace_run, wait_listening

pytestmark = pytest.mark.bpf

APP = "tests.server_apps.basic:app"


def _server_child(tracer_pid: int) -> int:
    children = Path(f"/proc/{tracer_pid}/task/{tracer_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for its (dying) parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


class SlowRequest(threading.Thread):
    """GET /slow?s=SECONDS on its own connection; `status` or `error` once it ends."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.status: int | None = None
        self.error: BaseException | None = None
        self.sent = threading.Event()

    def run(self) -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            connection.request("GET", f"/slow?s={self.seconds}")
            self.sent.set()
            response = connection.getresponse()
            response.read()
            self.status = response.status
        except Exception as exc:
            self.error = exc
            self.sent.set()


def _probe_connect(port: int) -> str:
    """One new client: 'refused' or 'served'; 'HUNG' when it waited 2 s for nothing."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/")
        connection.getresponse().read()
        connection.close()
        return "served"
    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
        return "refused"
    except TimeoutError:
        return "HUNG"
    except OSError as exc:  # EPIPE and the like: the server closed on us, not a hang
        return f"refused ({exc.__class__.__name__})"


def _connect_repeatedly(port: int, seconds: float) -> list[str]:
    outcomes = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        outcomes.append(_probe_connect(port))
        time.sleep(0.05)
    return outcomes


def test_no_client_hangs_while_the_run_stops_and_requests_in_flight_finish() -> None:
    port = free_port()
    with reqtrace_run(APP, "--port", str(port)) as process:
        wait_listening(port, process)
        slow = SlowRequest(port, 2.0)
        slow.start()
        slow.sent.wait(5)
        time.sleep(0.3)  # the request is in the app
        process.send_signal(signal.SIGTERM)
        outcomes = _connect_repeatedly(port, 3.0)  # the drain of the slow request and beyond
        slow.join(10)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "HUNG" not in outcomes, outcomes
    assert outcomes and outcomes[-1].startswith("refused")
    assert slow.status == 200, slow.error  # the request in flight finished
    assert "reqtrace: stopping: SIGTERM" in err
    assert re.search(r"stopped accepting; \d+ connections? finishing", err), err
    assert "Shutting down: SIGTERM." in err and "Shutting down (SIGTERM)" not in err


def test_a_duration_stop_says_so() -> None:
    port = free_port()
    with reqtrace_run(APP, "--port", str(port), "--duration", "1") as process:
        wait_listening(port, process)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "reqtrace: stopping: --duration 1 s reached" in err
    assert "Shutting down: --duration 1 s reached." in err
    assert "SIGTERM" not in err


def test_after_kill_9_of_the_tracer_the_server_stops_at_once() -> None:
    port = free_port()
    with reqtrace_run(APP, "--port", str(port)) as process:
        wait_listening(port, process)
        child = _server_child(process.pid)
        slow = SlowRequest(port, 5.0)
        slow.start()
        slow.sent.wait(5)
        time.sleep(0.3)
        killed = time.monotonic()
        process.kill()
        first = _probe_connect(port)  # refused, or served just before the server knew
        while not _gone(child) and time.monotonic() - killed < 10:
            time.sleep(0.01)
        ended_after = time.monotonic() - killed
        # The dying tracer still holds its copy of the listening socket while the kernel
        # detaches its probes (seconds): the socket must not take connections meanwhile.
        after = _probe_connect(port)
        print(f"server ended {ended_after:.3f} s after kill -9 of the tracer")
        slow.join(10)
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
    assert first != "HUNG"
    assert after.startswith("refused"), after
    # It did not wait for the 5 s request in flight (nobody traces it any more).
    assert ended_after < 5.0
    assert slow.status is None


def test_a_server_killed_while_serving_is_reported_as_such() -> None:
    port = free_port()
    with reqtrace_run(APP, "--port", str(port)) as process:
        wait_listening(port, process)
        time.sleep(0.5)
        os.kill(_server_child(process.pid), signal.SIGKILL)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert "was killed by SIGKILL after serving" in err
    assert "at startup" not in err and "status -9" not in err


def test_the_listening_socket_is_gone_once_the_run_ended() -> None:
    port = free_port()
    with reqtrace_run(APP, "--port", str(port), "--duration", "0.5") as process:
        wait_listening(port, process)
        process.communicate(timeout=60)
    result = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_ctrl_c_while_the_probes_are_prepared_is_an_interruption(tmp_path: Path) -> None:
    """Stopped before it served: exit 130, said so, the app's server gone with it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tracer", "run", APP, "--port", str(port), "--no-tui"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REQTRACE_CACHE_DIR": str(tmp_path / "cache")},  # cold: slow
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "attach strategies" in line:
            child = _server_child(process.pid)
            process.send_signal(signal.SIGINT)
            break
    else:
        raise AssertionError("".join(lines))
    lines += process.stderr.readlines()
    process.wait(timeout=60)
    err = "".join(lines)
    assert process.returncode == 130, err
    assert "reqtrace: interrupted (Ctrl-C (SIGINT)) before the server started" in err
    assert _gone(child)
