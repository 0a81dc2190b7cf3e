"""How long `reqtrace run` takes to its first traced request, cold and warm (issue 16).

    from scripts.bench_startup import measure
    measure()  # {"cold_s": 7.4, "warm_s": 0.6, "stop_s": 2.3, "app_error_s": 0.4, ...}

    scripts/launch --root scripts.bench_startup [--rounds N] [--json]

Each figure is wall-clock seconds from starting `python -m tracer run APP --no-tui` until the
run's own log line for a GET / it traced appears (a request sent every 20 ms from the start;
it is answered only once the probes are armed, so the first answered request is traced):

- cold_s: an empty probe cache (REQTRACE_CACHE_DIR in a fresh folder): attach trials, clang;
- warm_s: the same cache again (the second run on this kernel and boot);
- stop_s: SIGTERM to the warm run until it exited (drain, footer, probes detached);
- app_error_s: `run nosuch:app` until it exited with the app's import error.

Needs root and BCC (it traces). The machine is shared: run it alone, under
`flock /tmp/reqtrace-heavy.lock`. Medians over `rounds` (each round has its own cold cache).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "scripts.bench_apps:hello"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poke(port: int) -> None:
    """One GET / with a short timeout; errors are expected until the server listens."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        connection.request("GET", "/")
        connection.getresponse().read()
        connection.close()
    except OSError:
        pass


def first_traced_request(cache: Path, timeout: float = 120.0) -> tuple[float, float]:
    """(seconds to the first traced GET /, seconds from SIGTERM to exit) of one run."""
    port = _free_port()
    env = {**os.environ, "REQTRACE_CACHE_DIR": str(cache)}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "tracer", "run", APP, "--port", str(port), "--no-tui",
         "--no-access-log"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    buffered = b""
    try:
        while True:
            if time.monotonic() - started > timeout or process.poll() is not None:
                raise RuntimeError(
                    f"no traced request within {timeout:g} s (exit {process.poll()})"
                )
            _poke(port)
            ready, _, _ = select.select([process.stdout], [], [], 0.02)
            if ready:
                buffered += os.read(process.stdout.fileno(), 65536)
                if b" GET / " in buffered:  # the run's one line per traced request
                    traced = time.monotonic() - started
                    break
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        return traced, time.monotonic() - stopping
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def app_error_seconds() -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tracer", "run", "nosuch_module_for_bench:app", "--no-tui"],
        cwd=ROOT, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 1:
        raise RuntimeError(f"run nosuch:app exited {result.returncode}, not 1")
    return time.monotonic() - started


def measure(rounds: int = 1) -> dict[str, float]:
    """Median cold/warm seconds to the first traced request, stop and app-error seconds."""
    cold, warm, stop, app_error = [], [], [], []
    for _ in range(rounds):
        cache = Path(tempfile.mkdtemp(prefix="reqtrace-bench-cache-"))
        try:
            cold.append(first_traced_request(cache)[0])
            traced, stopped = first_traced_request(cache)
            warm.append(traced)
            stop.append(stopped)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        app_error.append(app_error_seconds())
    return {
        "cold_s": round(statistics.median(cold), 3),
        "warm_s": round(statistics.median(warm), 3),
        "stop_s": round(statistics.median(stop), 3),
        "app_error_s": round(statistics.median(app_error), 3),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/launch --root scripts.bench_startup")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the dict as JSON")
    args = parser.parse_args()
    figures = measure(args.rounds)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"reqtrace run to the first traced request: cold {figures['cold_s']:.2f} s, "
          f"warm {figures['warm_s']:.2f} s; stop {figures['stop_s']:.2f} s; "
          f"an app mistake told in {figures['app_error_s']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
