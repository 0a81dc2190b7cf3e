"""What reqtrace's hooks cost inside the user's own uvicorn (issue 19), without BPF.

    .venv/bin/python -m scripts.bench_hosted [--seconds 5] [--rounds 2] [--http httptools]

The same uvicorn (reqtrace's environment), the same hello app (scripts/bench_apps.py),
served plain and with the hooked protocol (tracer/hosted/) whose records go through the
hook pipe to this process, which drains and decodes them as the tracer would. wrk (one
thread, pinned to CPU 1, 16 keep-alive connections) loads each for `seconds`; the server is
pinned to CPU 0. Printed side by side per round: requests/s and the server's CPU per
request, and the hooked/plain ratios (the budget: server CPU <= 1.25x, requests/s >= 0.8x,
of which the hooks are a part). Run it alone: `flock /tmp/reqtrace-heavy.lock`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import psutil

from scripts.bench_wrk import run_wrk
from tracer.server.hook_channel import HookChannelReader

SERVER = """
import sys, uvicorn
from tracer.hosted.hook_state import HostedHooks, install
from tracer.hosted.uvicorn_support import hooked_protocol
from tracer.server.hook_channel import HookChannelWriter
port, http, hook_fd = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if hook_fd >= 0:
    writer = HookChannelWriter(hook_fd)
    install(HostedHooks(writer.emit_wire))
    http = hooked_protocol(http, uvicorn.__version__)[0]
uvicorn.run("scripts.bench_apps:hello", port=port, http=http, loop="uvloop",
            log_level="warning", access_log=False, lifespan="off")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the server never listened")


def one(http: str, hooked: bool, seconds: float) -> tuple[float, float, int]:
    """(requests/s, server CPU µs per request, hook records read)."""
    port = free_port()
    read_fd, write_fd = os.pipe() if hooked else (-1, -1)
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-c", SERVER, str(port), http, str(write_fd)],
        pass_fds=(write_fd,) if hooked else (),
    )
    records = 0
    stop = threading.Event()
    if hooked:
        os.close(write_fd)
        reader = HookChannelReader(read_fd)

        def drain() -> None:
            nonlocal records
            while not stop.is_set():
                records += len(reader.read())
                time.sleep(0.02)

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
    try:
        wait_port(port)
        run_wrk(port, 1.0, 16, cpu=1)  # warm-up
        process = psutil.Process(server.pid)
        before = process.cpu_times()
        result = run_wrk(port, seconds, 16, cpu=1)
        after = process.cpu_times()
    finally:
        server.terminate()
        server.wait(timeout=10)
        stop.set()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    return result.requests_per_s, cpu_s / result.requests * 1e6, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--http", default="httptools", choices=("httptools", "h11"))
    args = parser.parse_args()
    rates, cpus = [], []
    print(f"uvicorn --http {args.http}, {args.seconds:g} s per run, wrk -c16")
    for round_ in range(1, args.rounds + 1):
        plain_rate, plain_cpu, _ = one(args.http, False, args.seconds)
        hooked_rate, hooked_cpu, records = one(args.http, True, args.seconds)
        rates.append(hooked_rate / plain_rate)
        cpus.append(hooked_cpu / plain_cpu)
        print(
            f"round {round_}: plain {plain_rate:,.0f} req/s {plain_cpu:.1f} µs/req;"
            f" hooked {hooked_rate:,.0f} req/s {hooked_cpu:.1f} µs/req ({records:,} records);"
            f" ratios: req/s {rates[-1]:.2f}x, CPU/req {cpus[-1]:.2f}x"
        )
    print(
        f"median ratios (hooked/plain): req/s {statistics.median(rates):.2f}x,"
        f" server CPU per request {statistics.median(cpus):.2f}x"
    )


if __name__ == "__main__":
    main()
