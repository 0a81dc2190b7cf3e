"""The bundled server under wrk, untraced and traced the way `reqtrace run` traces it.

untraced: `python -m tracer serve scripts.bench_apps:hello` (hooks off), nothing attached
          (scripts/bench_probes.py starts it).
traced:   a real `RunSession` (tracer/session/run_session.py) with the same app: probes compiled,
          attached and filtered to the server child's pid and port, the server child
          with its timing hooks writing to the pipe, the pipeline thread draining the
          ring buffer every 20 ms and feeding the correlator; the finished traces go to
          the run's in-memory tail only (no dashboard, no recording, no per-request
          log). wrk is the `wait` of the run.

Both: the server on one CPU, wrk (and this process, with the tracer's pipeline thread) on
the other; a 1 s warm-up, then a timed wrk --latency run. Counters (ring-buffer records,
eBPF run time from kernel.bpf_stats_enabled, CPU times) are read right around the timed run;
the tracer's side after its pipeline has caught up with what the run produced (bounded).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.bench_wrk import WrkResult, run_wrk

if TYPE_CHECKING:
    from tracer.session.pipeline import Pipeline

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
APP = "scripts.bench_apps:hello"
SETTLE_S = 0.1  # counters unchanged for STILL_CHECKS x this: the pipeline has caught up
STILL_CHECKS = 4  # more than the correlator's 250 ms reorder window


@dataclass
class ServerRun:
    variant: str  # "untraced" | "traced"
    wrk: WrkResult
    server_cpu_us_per_request: float
    kernel_records: int = 0  # ring-buffer records the pipeline took during the timed run
    hook_records: int = 0
    lost_records: int = 0
    traces: int = 0
    bpf_ns: int = 0  # run_time_ns of our BPF programs during the timed run
    bpf_runs: int = 0
    hooks_dropped: int = 0  # hook records the server dropped (pipe full)
    pipeline_cpu_us_per_request: float = 0.0  # the tracer's pipeline thread, backlog included
    pipeline_behind_s: float = 0.0  # how long it took to catch up after wrk stopped

    def per_request(self, value: float) -> float:
        return value / self.wrk.requests if self.wrk.requests else 0.0


def process_cpu_s(pid: int | str) -> float:
    """User + system CPU seconds of a process (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int | str, tid: int) -> float:
    """CPU seconds of one thread, from the scheduler's ns counter (/proc/.../schedstat)."""
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9


def pin_process(pid: int, cpu: int | None) -> None:
    """Move every thread of `pid` to `cpu` (sched_setaffinity is per thread)."""
    if cpu is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), {cpu})


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 while inside (it costs two clock reads per program run)."""
    previous = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    try:
        yield
    finally:
        STATS_SYSCTL.write_text(previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pipeline_snapshot(pipeline: Pipeline) -> tuple[int, int, int, int, int]:
    """(kernel records, hook records, traces, lost records, hook records dropped) so far."""
    counters = pipeline.counters
    return (
        counters.kernel_records,
        counters.hook_records,
        counters.traces,
        counters.lost_records,
        pipeline.hooks.dropped,
    )


def caught_up(
    pipeline: Pipeline, pipeline_tid: int, stop: threading.Event, limit_s: float = 20.0
) -> float:
    """Wait (bounded) until the pipeline has taken everything; returns how long it took.

    No traffic flows now, so once the ring buffer and the hook pipe are empty and the
    correlator has emitted what it held, the counters stop moving and the pipeline thread
    idles in its 20 ms polls. Both are checked: while it works through a big backlog in
    one step its counters stand still too, but it is busy.
    """
    began = time.monotonic()
    last = pipeline_snapshot(pipeline)
    cpu = thread_cpu_s("self", pipeline_tid)
    still = 0
    while still < STILL_CHECKS and time.monotonic() - began < limit_s and not stop.is_set():
        time.sleep(SETTLE_S)
        now, cpu_now = pipeline_snapshot(pipeline), thread_cpu_s("self", pipeline_tid)
        idle = cpu_now - cpu < SETTLE_S * 0.2
        still = still + 1 if now == last and idle else 0
        last, cpu = now, cpu_now
    return max(time.monotonic() - began - STILL_CHECKS * SETTLE_S, 0.0)


def untraced_run(
    loop: str, seconds: float, connections: int, pins: tuple[int | None, int | None]
) -> ServerRun:
    from scripts.bench_probes import server

    server_cpu, client_cpu = pins
    port = free_port()
    with server("reqtrace", loop, port, server_cpu if server_cpu is not None else 0) as pid:
        run_wrk(port, 1, connections, client_cpu)  # warm-up
        cpu_before = process_cpu_s(pid)
        result = run_wrk(port, seconds, connections, client_cpu, latency=True)
        cpu = process_cpu_s(pid) - cpu_before
    return ServerRun("untraced", result, cpu / max(result.requests, 1) * 1e6)


def traced_run(
    loop: str, seconds: float, connections: int, pins: tuple[int | None, int | None]
) -> ServerRun:
    from scripts.bench_probes import program_stats
    from tracer.server.config import Config
    from tracer.session.run_session import RunError, RunOptions, RunSession
    from tracer.session.signals import stop_on_signals

    server_cpu, client_cpu = pins
    config = Config(
        app=APP,
        host="127.0.0.1",
        port=0,
        loop=loop,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
    )
    session = RunSession(config, RunOptions(), argv=["scripts/bench"])
    measured: list[ServerRun] = []

    def wait(running: RunSession) -> None:
        pipeline, child = running.pipeline, running.child
        assert pipeline is not None and pipeline.probes is not None and child is not None
        pin_process(child.pid, server_cpu)
        pin_process(os.getpid(), client_cpu)
        pipeline_tid = next(
            t.native_id for t in threading.enumerate() if t.name == "reqtrace-pipeline"
        )
        assert pipeline_tid is not None
        run_wrk(running.port, 1, connections, client_cpu)  # warm-up
        caught_up(pipeline, pipeline_tid, running.stop)
        if running.stop.is_set():
            return
        before = pipeline_snapshot(pipeline)
        stats_before = program_stats(pipeline.probes)
        server_before = process_cpu_s(child.pid)
        pipeline_before = thread_cpu_s("self", pipeline_tid)
        result = run_wrk(running.port, seconds, connections, client_cpu, latency=True)
        server_cpu_s = process_cpu_s(child.pid) - server_before
        stats_after = program_stats(pipeline.probes)
        behind_s = caught_up(
            pipeline, pipeline_tid, running.stop
        )  # the backlog belongs to this run too
        pipeline_cpu_s = thread_cpu_s("self", pipeline_tid) - pipeline_before
        after = pipeline_snapshot(pipeline)
        if running.stop.is_set():  # wrk was interrupted too: not a whole run
            return
        requests = max(result.requests, 1)
        measured.append(
            ServerRun(
                "traced",
                result,
                server_cpu_s / requests * 1e6,
                kernel_records=after[0] - before[0],
                hook_records=after[1] - before[1],
                traces=after[2] - before[2],
                lost_records=after[3] - before[3],
                hooks_dropped=after[4] - before[4],
                bpf_ns=sum(ns for ns, _ in stats_after.values())
                - sum(ns for ns, _ in stats_before.values()),
                bpf_runs=sum(n for _, n in stats_after.values())
                - sum(n for _, n in stats_before.values()),
                pipeline_cpu_us_per_request=pipeline_cpu_s / requests * 1e6,
                pipeline_behind_s=behind_s,
            )
        )

    # Like `reqtrace run`: Ctrl-C/SIGTERM only set the session's stop flag, so they never land
    # in the middle of BCC attaching or detaching; the run unwinds, then we re-raise.
    with stop_on_signals(session.stop):
        try:
            session.prepare()
            if not session.stop.is_set():
                session.run(wait)
        except RunError as exc:
            raise RuntimeError(f"cannot trace: {exc}") from None
        finally:
            if session.listener is not None:
                session.listener.close()
    if session.stop.is_set():
        raise KeyboardInterrupt
    if session.pipeline is not None and session.pipeline.error is not None:
        raise RuntimeError(f"the tracer's pipeline failed: {session.pipeline.error!r}")
    if not measured:
        raise RuntimeError("the traced run stopped before wrk ran")
    return measured[0]
