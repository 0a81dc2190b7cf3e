"""Benchmark reqtrace's probes: a server under wrk with probes attached vs detached.

Prints, measured side by side in one run (alternating rounds, medians):
  - requests/s untraced and traced, and their ratio;
  - ring-buffer records per request;
  - eBPF time per request: run_time_ns of our programs (kernel.bpf_stats_enabled) / requests.
Traced means: probes attached and filtered to the server's pid and port, and a consumer
thread draining and decoding the ring buffer every 20 ms, as `reqtrace run` does.

Traffic stays on 127.0.0.1; every run is bounded by wrk's duration; the server and the
probes are stopped even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_wrk import run_wrk  # noqa: E402
from tracer.kernel.attach_plan import ProbePlan, build_plan  # noqa: E402
from tracer.kernel.attach_trials import AttachTrials  # noqa: E402
from tracer.kernel.probe_loader import ProbeSession  # noqa: E402
from tracer.kernel.system_facts import gather, tracing_blocker  # noqa: E402

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


@dataclass
class Run:
    variant: str
    requests: int
    rps: float
    records: int = 0
    lost: int = 0
    bpf_ns: int = 0
    bpf_runs: int = 0
    per_program: dict[str, tuple[int, int]] = field(default_factory=dict)
    consumer_cpu_s: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(kind: str, loop: str, port: int, cpu: int) -> Iterator[int]:
    """A single-process server for the bench app, pinned to one CPU. Yields its pid."""
    if kind == "uvicorn":
        argv = [
            sys.executable, "-m", "uvicorn", "scripts.bench_apps:hello",
            "--host", "127.0.0.1", "--port", str(port), "--http", "httptools",
            "--loop", loop, "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    else:
        argv = [
            sys.executable, "-m", "tracer", "serve", "scripts.bench_apps:hello",
            "--host", "127.0.0.1", "--port", str(port), "--loop", loop,
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    process = subprocess.Popen(["taskset", "-c", str(cpu), *argv], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None:
                raise RuntimeError(f"{kind} exited with status {process.returncode}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{kind} did not start listening on port {port}")
        yield process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wrk(port: int, seconds: int, connections: int, cpu: int) -> tuple[int, float]:
    result = run_wrk(port, seconds, connections, cpu)
    return result.requests, result.requests_per_s


def program_stats(probes: ProbeSession) -> dict[str, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt) of each of our programs, from /proc/self/fdinfo."""
    stats = {}
    for name, fn in probes.bpf.funcs.items():
        text = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        stats[name.decode()] = (int(values["run_time_ns"]), int(values["run_cnt"]))
    return stats


def traced_run(plan: ProbePlan, pid: int, port: int, args: argparse.Namespace) -> Run:
    with ProbeSession(plan) as probes:
        probes.set_targets(tgids={pid}, ports={port})
        stop = threading.Event()
        count = [0]

        consumer_cpu = [0.0]

        def consume() -> None:
            started = time.thread_time()
            while not stop.is_set():
                count[0] += len(probes.poll(20))
            count[0] += len(probes.drain())
            consumer_cpu[0] = time.thread_time() - started

        consumer = threading.Thread(target=consume, name="ringbuf-consumer")
        before = program_stats(probes)
        consumer.start()
        try:
            requests, rps = wrk(port, args.seconds, args.connections, args.client_cpu)
        finally:
            stop.set()
            consumer.join()
        after = program_stats(probes)
        delta = {n: (after[n][0] - before[n][0], after[n][1] - before[n][1]) for n in after}
        lost = sum(probes.lost_records().values())
    return Run(
        "traced",
        requests,
        rps,
        records=count[0],
        lost=lost,
        bpf_ns=sum(ns for ns, _ in delta.values()),
        bpf_runs=sum(runs for _, runs in delta.values()),
        per_program=delta,
        consumer_cpu_s=consumer_cpu[0],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["uvicorn", "reqtrace"], default="uvicorn")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="programs to list by eBPF time")
    args = parser.parse_args()

    blocker = tracing_blocker(gather())
    if blocker:
        print(blocker, file=sys.stderr)
        return 2
    with AttachTrials(gather()) as trials:
        plan = build_plan(trials)

    previous_stats = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    runs: list[Run] = []
    port = free_port()
    try:
        with server(args.server, args.loop, port, args.server_cpu) as pid:
            wrk(port, 1, args.connections, args.client_cpu)  # warm up
            for round_number in range(args.rounds):
                requests, rps = wrk(port, args.seconds, args.connections, args.client_cpu)
                runs.append(Run("untraced", requests, rps))
                runs.append(traced_run(plan, pid, port, args))
                print(
                    f"round {round_number + 1}: untraced {runs[-2].rps:,.0f} req/s, "
                    f"traced {runs[-1].rps:,.0f} req/s",
                    file=sys.stderr,
                )
    finally:
        STATS_SYSCTL.write_text(previous_stats)

    untraced = [r for r in runs if r.variant == "untraced"]
    traced = [r for r in runs if r.variant == "traced"]
    median_untraced = statistics.median(r.rps for r in untraced)
    median_traced = statistics.median(r.rps for r in traced)
    records_per_request = sum(r.records + r.lost for r in traced) / sum(r.requests for r in traced)
    bpf_ns_per_request = sum(r.bpf_ns for r in traced) / sum(r.requests for r in traced)
    runs_per_request = sum(r.bpf_runs for r in traced) / sum(r.requests for r in traced)

    print(
        f"\nreqtrace probe benchmark: {args.server} ({args.loop}) on CPU {args.server_cpu}, "
        f"wrk -t1 -c{args.connections} -d{args.seconds}s on CPU {args.client_cpu}, "
        f"{args.rounds} alternating rounds, {os.uname().release}"
    )
    print(f"{'variant':10} " + " ".join(f"{'run ' + str(i + 1):>10}" for i in range(args.rounds)))
    for name, group in (("untraced", untraced), ("traced", traced)):
        print(f"{name:10} " + " ".join(f"{r.rps:>10,.0f}" for r in group))
    print(f"median req/s          untraced {median_untraced:,.0f}   traced {median_traced:,.0f}")
    print(f"ratio traced/untraced {median_traced / median_untraced:.3f}")
    print(
        f"ring-buffer records per request {records_per_request:.2f} "
        f"(lost {sum(r.lost for r in traced)})"
    )
    print(
        f"eBPF time per request {bpf_ns_per_request / 1000:.2f} us "
        f"({runs_per_request:.1f} program runs per request)"
    )
    consumer_us = sum(r.consumer_cpu_s for r in traced) * 1e6
    consumed = sum(r.records for r in traced)
    print(
        f"consumer CPU {consumer_us / max(consumed, 1):.2f} us per record "
        f"({consumer_us / sum(r.requests for r in traced):.2f} us per request: drain + decode)"
    )
    totals: dict[str, list[int]] = {}
    for run in traced:
        for name, (ns, runs) in run.per_program.items():
            total = totals.setdefault(name, [0, 0])
            total[0] += ns
            total[1] += runs
    requests_traced = sum(r.requests for r in traced)
    print("  ns/request  runs/request  ns/run  program")
    for name, (ns, runs) in sorted(totals.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(
            f"  {ns / requests_traced:10.0f}  {runs / requests_traced:12.1f}  "
            f"{ns / max(runs, 1):6.0f}  {name}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
