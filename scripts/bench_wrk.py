"""wrk for the benchmarks: one bounded keep-alive run against 127.0.0.1, its output parsed.

`parse_wrk` is pure (tested in tests/test_bench_smoke.py); `run_wrk` pins wrk to a CPU
with taskset when asked, so the client and the server do not fight over one core.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_UNIT_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class WrkError(RuntimeError):
    """wrk failed, or printed something these scripts do not understand."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    requests_per_s: float
    latency_ms: dict[int, float]  # percentile -> ms, filled when wrk ran with --latency
    bad_status: int = 0  # "Non-2xx or 3xx responses"
    socket_errors: str = ""  # wrk's "Socket errors: ..." line, empty when there were none

    @property
    def p99_ms(self) -> float | None:
        return self.latency_ms.get(99)


def duration_ms(text: str) -> float:
    """wrk's durations ("812.00us", "1.23ms", "2.01s", "1.00m") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise WrkError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNIT_TO_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """The numbers of one wrk run from what it printed."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    if not rate or not count:
        raise WrkError(f"wrk output not understood:\n{output}")
    latency: dict[int, float] = {}
    distribution = output.split("Latency Distribution", 1)
    if len(distribution) == 2:
        for percent, value in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", distribution[1], re.M):
            latency[int(percent)] = duration_ms(value)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: .*", output)
    return WrkResult(
        requests=int(count.group(1)),
        requests_per_s=float(rate.group(1)),
        latency_ms=latency,
        bad_status=int(bad.group(1)) if bad else 0,
        socket_errors=errors.group(0) if errors else "",
    )


def wrk_argv(
    port: int,
    seconds: float,
    connections: int,
    cpu: int | None = None,
    path: str = "/",
    latency: bool = False,
) -> list[str]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    if latency:
        argv.append("--latency")
    argv.append(f"http://127.0.0.1:{port}{path}")
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    return argv


def run_wrk(
    port: int,
    seconds: float,
    connections: int,
    cpu: int | None = None,
    path: str = "/",
    latency: bool = False,
) -> WrkResult:
    """One wrk run (-t1, keep-alive) of `seconds`; raises WrkError on non-2xx answers."""
    argv = wrk_argv(port, seconds, connections, cpu, path, latency)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=True
        )
    except subprocess.CalledProcessError as exc:
        raise WrkError(f"wrk exited with {exc.returncode}: {exc.stderr.strip()}") from None
    result = parse_wrk(done.stdout)
    if result.bad_status:
        raise WrkError(f"wrk saw {result.bad_status} non-2xx/3xx responses")
    return result
