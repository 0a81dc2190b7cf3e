"""What the live dashboard costs: `reqtrace demo --rate R` in a detached tmux pane.

The tracer process (dashboard + pipeline thread) runs in a tmux pane of fixed size on a
private tmux socket; its server child and its load generator are separate processes and are
not counted. Over a steady window (after the first traces plus a warm-up) this samples:

  - the tracer process's user+sys CPU time (/proc/PID/stat, all threads);
  - its pipeline thread's CPU time (/proc/PID/task/TID/schedstat);
  - requests traced in the window, from counters the pipeline publishes.

Run as `python -m scripts.bench_dashboard COUNTS_FILE DEMO_ARGS...` this module is that
tracer process: `reqtrace demo` itself (tracer.cli), with two additions that cost next to
nothing: the pipeline thread gets the OS name "reqtrace-pipeli" (Python 3.11 does not name
OS threads), and a second thread appends the pipeline's counters to COUNTS_FILE 10 times a
second.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_COMM = "reqtrace-pipeli"  # "reqtrace-pipeline" cut to the kernel's 15 characters
COUNTER_COMM = "bench-counts"
PR_SET_NAME = 15


@dataclass
class DashboardRun:
    window_s: float
    requests: int  # traced in the window
    process_cpu_s: float  # the whole tracer process
    pipeline_cpu_s: float  # its pipeline thread

    @property
    def rate(self) -> float:
        return self.requests / self.window_s

    @property
    def dashboard_cpu_s(self) -> float:
        """Everything but the pipeline thread: the Textual app, its timers, status probes."""
        return max(self.process_cpu_s - self.pipeline_cpu_s, 0.0)

    def percent_of_core(self, cpu_s: float) -> float:
        return cpu_s / self.window_s * 100

    def us_per_request(self, cpu_s: float) -> float:
        return cpu_s / self.requests * 1e6 if self.requests else 0.0


# -- the tracer process (inside the tmux pane) -------------------------------------------


def _name_this_thread(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _publish_counters(pipeline: Any, path: str, stop: threading.Event) -> None:
    _name_this_thread(COUNTER_COMM)
    with open(path, "a", buffering=1) as out:
        while not stop.wait(0.1):
            counters = pipeline.counters
            out.write(f"{time.monotonic_ns()} {counters.traces} {counters.kernel_records}\n")


def child_main(argv: list[str]) -> int:
    """`reqtrace demo ARGS` with the pipeline thread named and its counters published."""
    counts_path, demo_args = argv[0], argv[1:]
    from tracer.cli import main as reqtrace_main
    from tracer.session import pipeline as pipeline_module

    original_run = pipeline_module.Pipeline.run

    def run(self: Any, stop: threading.Event) -> None:
        _name_this_thread(PIPELINE_COMM)
        publisher = threading.Thread(
            target=_publish_counters, args=(self, counts_path, stop), daemon=True
        )
        publisher.start()
        original_run(self, stop)

    pipeline_module.Pipeline.run = run  # type: ignore[method-assign]
    return reqtrace_main(["demo", *demo_args])


# -- the measuring side ------------------------------------------------------------------


def read_counts(path: Path) -> list[tuple[int, int]]:
    """(monotonic ns, traces so far) samples the tracer published."""
    samples = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                samples.append((int(parts[0]), int(parts[1])))
    return samples


def traces_at(samples: list[tuple[int, int]], when_ns: int) -> float:
    """Traces emitted by `when_ns`, interpolated between the published samples."""
    if not samples:
        return 0.0
    previous = samples[0]
    for sample in samples:
        if sample[0] >= when_ns:
            if sample[0] == previous[0]:
                return float(sample[1])
            share = (when_ns - previous[0]) / (sample[0] - previous[0])
            return previous[1] + share * (sample[1] - previous[1])
        previous = sample
    return float(samples[-1][1])


def sample_cpu(pid: int) -> tuple[float, float]:
    """(process CPU s, pipeline thread CPU s) of the tracer process."""
    from scripts.bench_traced import process_cpu_s, thread_cpu_s

    total = process_cpu_s(pid)
    pipeline = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().strip() == PIPELINE_COMM:
                pipeline += thread_cpu_s(pid, int(task.name))
    return total, pipeline


class TmuxPane:
    """One detached pane on a private tmux server; `close()` kills the server."""

    def __init__(self, command: str, width: int, height: int) -> None:
        self.tmux = ["tmux", "-L", f"reqtrace-bench-{os.getpid()}", "-f", "/dev/null"]
        self._run(
            "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "bench",
            "-c", str(ROOT), command, ";", "set-option", "-t", "bench", "remain-on-exit", "on",
        )  # fmt: skip
        self.pid = int(self._run("list-panes", "-t", "bench", "-F", "#{pane_pid}").split()[0])

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.tmux, *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout

    def dead(self) -> bool:
        try:
            return self._run("list-panes", "-t", "bench", "-F", "#{pane_dead}").strip() == "1"
        except (subprocess.SubprocessError, OSError):
            return True

    def screen(self) -> str:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            return self._run("capture-pane", "-p", "-t", "bench")
        return ""

    def send_keys(self, *keys: str) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("send-keys", "-t", "bench", *keys)

    def close(self, grace_s: float = 15.0) -> None:
        """Quit the dashboard (q), wait for the tracer to stop its server, kill leftovers."""
        if not self.dead():
            self.send_keys("q")
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.1)
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("kill-server")  # SIGHUP to whatever is still in the pane
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.1)
        if _alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def dashboard_run(
    rate: float,
    connections: int,
    warmup_s: float,
    window_s: float,
    size: tuple[int, int] = (160, 48),
    start_timeout_s: float = 60.0,
) -> DashboardRun:
    """One `reqtrace demo` in a tmux pane, measured over a steady window."""
    with tempfile.TemporaryDirectory(prefix="reqtrace-bench-") as scratch:
        counts = Path(scratch, "counts")
        total_s = start_timeout_s + warmup_s + window_s + 10  # the demo's own bound
        demo = [
            sys.executable, "-m", "scripts.bench_dashboard", str(counts),
            "--rate", f"{rate:g}", "--connections", str(connections),
            "--duration", f"{total_s:g}",
        ]  # fmt: skip
        command = "exec env -u COLUMNS -u LINES " + shlex.join(demo)
        pane = TmuxPane(command, *size)
        try:
            deadline = time.monotonic() + start_timeout_s
            while not any(traces for _, traces in read_counts(counts)):
                if pane.dead() or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the demo did not start tracing; its screen was:\n" + pane.screen()
                    )
                time.sleep(0.2)
            time.sleep(warmup_s)
            started_ns = time.monotonic_ns()
            cpu_before = sample_cpu(pane.pid)
            time.sleep(window_s)
            cpu_after = sample_cpu(pane.pid)
            ended_ns = time.monotonic_ns()
            if pane.dead():
                raise RuntimeError("the demo ended during the window:\n" + pane.screen())
            time.sleep(0.3)  # one more counter sample after the window
            samples = read_counts(counts)
            requests = traces_at(samples, ended_ns) - traces_at(samples, started_ns)
        finally:
            pane.close()
    return DashboardRun(
        window_s=(ended_ns - started_ns) / 1e9,
        requests=round(requests),
        process_cpu_s=cpu_after[0] - cpu_before[0],
        pipeline_cpu_s=cpu_after[1] - cpu_before[1],
    )


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
