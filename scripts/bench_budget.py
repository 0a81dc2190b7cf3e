"""The tracer's budget at a fixed offered rate: what `scripts/bench` checks beyond wrk's
closed loop (issue 14's targets 5, 6 and 8).

A real `RunSession` (probes, server child with hooks, pipeline thread), offered a FIXED rate
(0.8x the untraced server's saturation rate, measured in the same bench run) instead of
wrk's all-you-can-eat closed loop: wrk paces each connection with a Lua `delay()` so the
offered rate does not grow with the server's speed. Measured over the run:

- ring-buffer records lost and hook records dropped (target: none at this rate);
- the pipeline thread's CPU per request, with and without `--record` (target: recording
  adds at most 15%);
- the tracer process's RSS, sampled every second (target: flat within ±10% from the
  first sample after warm-up to the last).

Only 127.0.0.1; every run is bounded (seconds + 30 s) and stops its server and probes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.bench_traced import (
    APP,
    caught_up,
    pin_process,
    pipeline_snapshot,
    thread_cpu_s,
)
from scripts.bench_wrk import parse_wrk, wrk_argv

CONNECTIONS = 100  # many slow connections: each one's pause dominates its latency
PACING_LUA = """
local delay_ms = {delay_ms}
function delay()
    return delay_ms
end
"""


@dataclass
class PacedRun:
    record: bool
    offered_rate: float
    achieved_rate: float = 0.0
    requests: int = 0
    lost_records: int = 0
    hooks_dropped: int = 0
    traces: int = 0
    pipeline_cpu_us_per_request: float = 0.0
    rss_mib: list[float] = field(default_factory=list)  # tracer process, one per second

    @property
    def rss_drift(self) -> float | None:
        """Last / first RSS sample after the warm-up (1.0 = flat)."""
        if len(self.rss_mib) < 2:
            return None
        return self.rss_mib[-1] / self.rss_mib[0]


def paced_wrk(port: int, rate: float, seconds: float, cpu: int | None) -> tuple[int, float]:
    """wrk offering about `rate` requests/s over CONNECTIONS connections; (requests, rate)."""
    delay_ms = max(1, round(CONNECTIONS * 1000 / rate))  # wrk's delay() is in whole ms
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(PACING_LUA.format(delay_ms=delay_ms))
    try:
        argv = wrk_argv(port, seconds, CONNECTIONS, cpu)
        argv[-1:-1] = ["-s", script.name]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=True
        )
    finally:
        os.unlink(script.name)
    result = parse_wrk(done.stdout)
    return result.requests, result.requests_per_s


def paced_run(
    loop: str,
    rate: float,
    seconds: float,
    pins: tuple[int | None, int | None],
    record: bool,
) -> PacedRun:
    import psutil

    from tracer.server.config import Config
    from tracer.session.run_session import RunError, RunOptions, RunSession
    from tracer.session.signals import stop_on_signals

    server_cpu, client_cpu = pins
    config = Config(app=APP, host="127.0.0.1", port=0, loop=loop, log_level="warning",  # type: ignore[arg-type]
                    access_log=False)  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="reqtrace-budget-"))
    options = RunOptions(record=str(folder / "run.jsonl") if record else None)
    session = RunSession(config, options, argv=["scripts/bench"])
    measured = PacedRun(record=record, offered_rate=rate)

    def wait(running: RunSession) -> None:
        pipeline, child = running.pipeline, running.child
        assert pipeline is not None and child is not None
        pin_process(child.pid, server_cpu)
        pin_process(os.getpid(), client_cpu)
        pipeline_tid = next(
            t.native_id for t in threading.enumerate() if t.name == "reqtrace-pipeline"
        )
        assert pipeline_tid is not None
        paced_wrk(running.port, rate, 2, client_cpu)  # warm-up
        caught_up(pipeline, pipeline_tid, running.stop)
        me = psutil.Process()
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                samples.append(me.memory_info().rss / (1 << 20))

        sampler = threading.Thread(target=sample, daemon=True)
        before = pipeline_snapshot(pipeline)
        cpu_before = thread_cpu_s("self", pipeline_tid)
        sampler.start()
        requests, achieved = paced_wrk(running.port, rate, seconds, client_cpu)
        caught_up(pipeline, pipeline_tid, running.stop)
        done.set()
        sampler.join()
        cpu = thread_cpu_s("self", pipeline_tid) - cpu_before
        after = pipeline_snapshot(pipeline)
        measured.achieved_rate = achieved
        measured.requests = requests
        measured.traces = after[2] - before[2]
        measured.lost_records = after[3] - before[3]
        measured.hooks_dropped = after[4] - before[4]
        measured.pipeline_cpu_us_per_request = cpu / max(requests, 1) * 1e6
        measured.rss_mib = samples

    try:
        with stop_on_signals(session.stop):
            session.prepare()
            session.run(wait)
    except RunError as exc:
        raise SystemExit(f"scripts/bench: the paced run could not trace: {exc}") from None
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
    time.sleep(0.5)  # let the server's port go before the next run
    return measured
