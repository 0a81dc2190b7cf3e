"""What the live dashboard costs, in a detached tmux pane of fixed size.

Two kinds of run:

- `dashboard_run`: `reqtrace demo --rate R` (server, load generator and tracer), the
  tracer process's CPU split into its pipeline thread and the rest;
- `synthetic_run`: the dashboard alone on a live feed filled at a fixed rate with synthetic
  traces (dashboards/synthetic.py) by a feeder thread standing in for the pipeline: the
  dashboard's CPU (the process less the feeder and counter threads, plus the feeder's time
  inside `feed.put()`, which is the dashboard's work), the key-to-screen latency (a key sent
  to the pane, until tmux's screen shows its effect) and the resident memory over time.
  No root, no BPF: it runs at 20,000 req/s and more, which the demo's server cannot.

The tracer process (dashboard + pipeline thread) runs in a tmux pane of fixed size on a
private tmux socket; its server child and its load generator are separate processes and are
not counted. Over a steady window (after the first traces plus a warm-up) this samples:

  - the tracer process's user+sys CPU time (/proc/PID/stat, all threads);
  - its pipeline thread's CPU time (/proc/PID/task/TID/schedstat);
  - requests traced in the window, from counters the pipeline publishes.

Run as `python -m scripts.bench_dashboard COUNTS_FILE DEMO_ARGS...` this module is the demo's
tracer process: `reqtrace demo` itself (tracer.cli), with two additions that cost next to
nothing: the pipeline thread gets the OS name "reqtrace-pipeli" (Python 3.11 does not name
OS threads), and a second thread appends the pipeline's counters to COUNTS_FILE 10 times a
second. Run as `python -m scripts.bench_dashboard --synthetic COUNTS_FILE RATE` it is the
synthetic dashboard process. Run as `python -m scripts.bench_dashboard --measure ...` it
measures a synthetic run from outside and prints the figures (see `measure_main`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shlex
import signal
import statistics
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
FEEDER_COMM = "bench-feeder"
PR_SET_NAME = 15


@dataclass
class DashboardRun:
    window_s: float
    requests: int  # traced in the window
    process_cpu_s: float  # the whole tracer process
    pipeline_cpu_s: float  # its pipeline thread (including put_cpu_s)
    put_cpu_s: float = 0.0  # of the pipeline thread, inside LiveFeed.put: the dashboard's

    @property
    def rate(self) -> float:
        return self.requests / self.window_s

    @property
    def dashboard_cpu_s(self) -> float:
        """The Textual app, its timers and status probes (every thread but the pipeline's),
        plus the dashboard's work on the pipeline thread (LiveFeed.put: its store)."""
        return max(self.process_cpu_s - self.pipeline_cpu_s + self.put_cpu_s, 0.0)

    @property
    def pipeline_own_cpu_s(self) -> float:
        """The pipeline thread without the dashboard's feed.put."""
        return max(self.pipeline_cpu_s - self.put_cpu_s, 0.0)

    def percent_of_core(self, cpu_s: float) -> float:
        return cpu_s / self.window_s * 100

    def us_per_request(self, cpu_s: float) -> float:
        return cpu_s / self.requests * 1e6 if self.requests else 0.0


# -- the tracer process (inside the tmux pane) -------------------------------------------


def _name_this_thread(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_PUT_NS = [0]  # CPU ns spent in LiveFeed.put (the dashboard's share of the pipeline thread)


def _publish_counters(pipeline: Any, path: str, stop: threading.Event) -> None:
    _name_this_thread(COUNTER_COMM)
    with open(path, "a", buffering=1) as out:
        while not stop.wait(0.1):
            counters = pipeline.counters
            out.write(
                f"{time.monotonic_ns()} {counters.traces} {counters.kernel_records} {_PUT_NS[0]}\n"
            )


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

    from dashboards.feed import LiveFeed

    original_put = LiveFeed.put

    def timed_put(self: Any, traces: Any) -> None:
        before = time.thread_time_ns()
        original_put(self, traces)
        _PUT_NS[0] += time.thread_time_ns() - before

    LiveFeed.put = timed_put  # type: ignore[method-assign]
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


def read_put_ns(path: Path) -> list[tuple[int, int]]:
    """(monotonic ns, CPU ns spent in LiveFeed.put so far) samples the tracer published."""
    samples = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                samples.append((int(parts[0]), int(parts[3])))
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

    def screen(self, escapes: bool = False) -> str:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            return self._run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "bench")
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
            puts = read_put_ns(counts)
            put_ns = traces_at(puts, ended_ns) - traces_at(puts, started_ns)
        finally:
            pane.close()
    return DashboardRun(
        window_s=(ended_ns - started_ns) / 1e9,
        requests=round(requests),
        process_cpu_s=cpu_after[0] - cpu_before[0],
        pipeline_cpu_s=cpu_after[1] - cpu_before[1],
        put_cpu_s=put_ns / 1e9,
    )


# -- the synthetic dashboard process (inside the tmux pane) -------------------------------


def synthetic_child_main(argv: list[str]) -> int:
    """The dashboard on a live feed filled by a paced synthetic feeder; counters to a file."""
    counts_path, rate = argv[0], float(argv[1])
    from dashboards.app import ReqtraceApp
    from dashboards.feed import LiveFeed, RunInfo
    from dashboards.synthetic import PacedFeeder

    feed = LiveFeed(RunInfo(title=f"synthetic {rate:g} req/s", address="http://127.0.0.1:8000"))
    feeder = PacedFeeder(feed, rate)
    stop = threading.Event()

    def feed_named() -> None:
        _name_this_thread(FEEDER_COMM)
        PacedFeeder.run(feeder)

    feeder.run = feed_named  # type: ignore[method-assign]

    def publish() -> None:
        _name_this_thread(COUNTER_COMM)
        with open(counts_path, "a", buffering=1) as out:
            while not stop.wait(0.1):
                out.write(f"{time.monotonic_ns()} {feeder.put_traces} {feeder.put_cpu_ns}\n")

    publisher = threading.Thread(target=publish, daemon=True)
    feeder.start()
    publisher.start()
    try:
        ReqtraceApp(feed).run()
    finally:
        feeder.stop()
        stop.set()
    return 0


# -- the measuring side of a synthetic run -----------------------------------------------


@dataclass
class SyntheticRun:
    rate: float  # requests put into the feed per second, measured
    window_s: float
    dashboard_cpu_s: float  # the process less feeder and counter threads, plus put()
    put_cpu_s: float  # of which inside feed.put() on the feeder thread
    feeder_cpu_s: float  # the feeder thread (making traces: the pipeline's stand-in)
    key_latencies_ms: list[float]
    rss_mib: list[tuple[float, float]]  # (seconds since the window began, RSS MiB)

    @property
    def dashboard_percent(self) -> float:
        return self.dashboard_cpu_s / self.window_s * 100

    def key_p(self, fraction: float) -> float | None:
        values = sorted(self.key_latencies_ms)
        if not values:
            return None
        return values[min(len(values) - 1, max(0, round(fraction * len(values)) - 1))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_per_s": self.rate,
            "window_s": self.window_s,
            "dashboard_percent": self.dashboard_percent,
            "dashboard_us_per_request": self.dashboard_cpu_s
            / max(1, self.rate * self.window_s)
            * 1e6,
            "put_percent": self.put_cpu_s / self.window_s * 100,
            "feeder_percent": self.feeder_cpu_s / self.window_s * 100,
            "key_latency_ms": self.key_latencies_ms,
            "key_p50_ms": self.key_p(0.5),
            "key_p99_ms": self.key_p(0.99),
            "rss_mib": self.rss_mib,
        }


def read_synthetic_counts(path: Path) -> list[tuple[int, int, int]]:
    """(monotonic ns, traces put, CPU ns inside put) samples the dashboard process wrote."""
    samples = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                samples.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return samples


def _threads_cpu(pid: int, names: set[str]) -> float:
    from scripts.bench_traced import thread_cpu_s

    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().strip() in names:
                total += thread_cpu_s(pid, int(task.name))
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


CURSOR_BACKGROUNDS = ("48;2;38;79;120", "48;5;24", "48;5;239")  # #264f78, its 256-colour forms


def cursor_row(screen_with_escapes: str) -> int | None:
    """The screen line showing the list's cursor (its highlight colour), if any."""
    for number, line in enumerate(screen_with_escapes.splitlines()):
        if any(code in line for code in CURSOR_BACKGROUNDS):
            return number
    return None


def key_latencies(pane: TmuxPane, presses: int, timeout_s: float = 2.0) -> list[float]:
    """Send j/k alternately; milliseconds until tmux's screen shows the cursor moved.

    The list is first put at its top (g), so j and k move the cursor between its first two
    rows while new requests keep arriving below.
    """
    pane.send_keys("g")
    time.sleep(1.0)
    latencies: list[float] = []
    for index in range(presses):
        before = cursor_row(pane.screen(escapes=True))
        if before is None:
            raise RuntimeError("no cursor on screen:\n" + pane.screen())
        key, expected = ("j", before + 1) if index % 2 == 0 else ("k", before - 1)
        sent = time.monotonic()
        pane.send_keys(key)
        while True:
            row = cursor_row(pane.screen(escapes=True))
            elapsed = time.monotonic() - sent
            if row == expected:
                latencies.append(elapsed * 1000)
                break
            if elapsed > timeout_s:
                latencies.append(timeout_s * 1000)
                break
            time.sleep(0.002)  # tmux capture-pane forks a client: leave the CPUs some room
        time.sleep(0.15)  # a person's pace, and past the next refresh
    return latencies


def synthetic_run(
    rate: float,
    warmup_s: float,
    window_s: float,
    size: tuple[int, int] = (160, 48),
    key_presses: int = 0,
    rss_every_s: float = 1.0,
) -> SyntheticRun:
    """The dashboard alone at `rate` synthetic req/s in a tmux pane, measured over a window."""
    with tempfile.TemporaryDirectory(prefix="reqtrace-bench-") as scratch:
        counts = Path(scratch, "counts")
        child = [sys.executable, "-m", "scripts.bench_dashboard", "--synthetic", str(counts)]
        command = "exec env -u COLUMNS -u LINES " + shlex.join([*child, f"{rate:g}"])
        pane = TmuxPane(command, *size)
        try:
            deadline = time.monotonic() + 30
            while not any(put for _, put, _ in read_synthetic_counts(counts)):
                if pane.dead() or time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not start:\n" + pane.screen())
                time.sleep(0.2)
            time.sleep(warmup_s)
            excluded = {FEEDER_COMM, COUNTER_COMM}
            from scripts.bench_traced import process_cpu_s

            samples_before = read_synthetic_counts(counts)[-1]
            began = time.monotonic()
            cpu_before = process_cpu_s(pane.pid), _threads_cpu(pane.pid, excluded)
            feeder_before = _threads_cpu(pane.pid, {FEEDER_COMM})
            rss: list[tuple[float, float]] = [(0.0, rss_mib(pane.pid))]
            while time.monotonic() - began < window_s:
                time.sleep(min(rss_every_s, max(0.0, window_s - (time.monotonic() - began))))
                rss.append((time.monotonic() - began, rss_mib(pane.pid)))
            cpu_after = process_cpu_s(pane.pid), _threads_cpu(pane.pid, excluded)
            feeder_after = _threads_cpu(pane.pid, {FEEDER_COMM})
            ended = time.monotonic()
            time.sleep(0.25)
            samples_after = read_synthetic_counts(counts)[-1]
            # Keys after the CPU window: a key redraws the detail, which is not the cost of
            # the rate; the feed keeps running meanwhile.
            latencies = key_latencies(pane, key_presses) if key_presses else []
            if pane.dead():
                raise RuntimeError("the dashboard ended during the window:\n" + pane.screen())
        finally:
            pane.close()
    window = ended - began
    put_s = (samples_after[2] - samples_before[2]) / 1e9
    put_traces = samples_after[1] - samples_before[1]
    process = (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])
    return SyntheticRun(
        rate=put_traces / ((samples_after[0] - samples_before[0]) / 1e9),
        window_s=window,
        dashboard_cpu_s=process + put_s,
        put_cpu_s=put_s,
        feeder_cpu_s=feeder_after - feeder_before,
        key_latencies_ms=latencies,
        rss_mib=rss,
    )


def measure_main(argv: list[str]) -> int:
    """`python -m scripts.bench_dashboard --measure --rate R ...`: one synthetic run, printed."""
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_dashboard --measure")
    parser.add_argument("--rate", type=float, action="append", required=True)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=0, help="key presses to time")
    parser.add_argument("--size", default="160x48")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    runs = []
    for rate in args.rate:
        run = synthetic_run(rate, args.warmup, args.window, (width, height), args.keys)
        runs.append(run.as_dict())
        put = run.put_cpu_s / run.window_s * 100
        rest = (run.feeder_cpu_s - run.put_cpu_s) / run.window_s * 100
        line = (
            f"{run.rate:8,.0f} req/s: dashboard {run.dashboard_percent:5.1f}% of a core "
            f"(of which {put:.1f}% in feed.put on the producer thread; making the traces "
            f"{rest:.1f}% not counted), RSS {run.rss_mib[0][1]:.0f} -> "
            f"{run.rss_mib[-1][1]:.0f} MiB over {run.window_s:.0f} s"
        )
        if run.key_latencies_ms:
            line += (
                f", key-to-screen p50 {run.key_p(0.5):.0f} ms p99 {run.key_p(0.99):.0f} ms "
                f"max {max(run.key_latencies_ms):.0f} ms ({len(run.key_latencies_ms)} keys, "
                f"median {statistics.median(run.key_latencies_ms):.0f})"
            )
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--synthetic"]:
        sys.exit(synthetic_child_main(sys.argv[2:]))
    if sys.argv[1:2] == ["--measure"]:
        sys.exit(measure_main(sys.argv[2:]))
    sys.exit(child_main(sys.argv[1:]))
