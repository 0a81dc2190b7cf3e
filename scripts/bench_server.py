"""Benchmark `reqtrace serve` against uvicorn (httptools, same loop) with wrk.

What it measures, on the same hello-world ASGI app, for each event loop available:
  uvicorn         python -m uvicorn --http httptools --loop L
  reqtrace        python -m tracer serve --loop L                 (timing hooks off)
  reqtrace+hooks  python -m tracer serve --loop L --hook-fd N     (hooks on, records go
                  through the real pipe channel; this script drains the pipe, like the tracer)
Both servers run with the access log off (it costs the same in both, and dominates).

How: the server is pinned to CPU 0, wrk (-t1, keep-alive) and this script to CPU 1 when
there are two CPUs; variants alternate within each round (order rotating) so slow drift of
a shared machine hits all of them; each run is a 1 s warm-up then a timed run. The table
shows every run, the median and the best (other load only ever slows a run down, so on a
shared machine the best is the closer estimate), and the server's CPU time per request
(steadier than req/s when something else competes for the CPUs). Only 127.0.0.1 is used, and
every server is stopped even on failure or Ctrl-C.

Then an in-process measurement of the server's own CPU per request (no sockets, a fake
transport): hooks off, on with a no-op sink, on with the pipe channel, and what the hook
flag tests cost when hooks are off.

Usage: scripts/bench_server [--runs 3] [--duration 3] [--connections 50] [--loop both]
"""

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_wrk import run_wrk  # noqa: E402

HELLO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
    })
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""

RUNNING: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    return (
        argv if cpu is None or not shutil.which("taskset") else ["taskset", "-c", str(cpu), *argv]
    )


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 "):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process in RUNNING:
        RUNNING.remove(process)


def drain_pipe(fd: int, sink: bytearray, done: threading.Event) -> None:
    """The tracer's side of the hook pipe: read everything, as fast as it comes."""
    while not done.is_set():
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not data:
            return
        sink += data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int, seconds: float, connections: int, cpu: int | None, path: str = "/"
) -> tuple[float, int]:
    """(requests/s, requests) of one wrk run (scripts/bench_wrk.py runs and parses it)."""
    result = run_wrk(port, seconds, connections, cpu, path)
    if result.socket_errors:  # e.g. timeouts when another process hogs the CPUs: say so, go on
        print(f"  note: wrk {result.socket_errors}", flush=True)
    return result.requests_per_s, result.requests


def measure(
    variant: str,
    loop: str,
    app_dir: str,
    args: argparse.Namespace,
    pins: tuple[int | None, int | None],
) -> tuple[float, float, int]:
    """One run of one variant: (requests/s, server CPU us per request, hook records)."""
    server_cpu, client_cpu = pins
    port = free_port()
    common = ["--host", "127.0.0.1", "--port", str(port), "--app-dir", app_dir]
    quiet = ["--no-access-log", "--log-level", "warning", "--lifespan", "off"]
    pass_fds: tuple[int, ...] = ()
    read_fd = write_fd = -1
    if variant == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", args.app, *common, *quiet]
        argv += ["--http", "httptools", "--loop", loop]
    else:
        argv = [sys.executable, "-m", "tracer", "serve", args.app, *common, *quiet]
        argv += ["--loop", loop]
        if variant == "reqtrace+hooks":
            read_fd, write_fd = os.pipe()
            argv += ["--hook-fd", str(write_fd)]
            pass_fds = (write_fd,)
    received = bytearray()
    done = threading.Event()
    drainer = None
    process = subprocess.Popen(
        pinned(server_cpu, argv),
        cwd=ROOT,
        pass_fds=pass_fds,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    RUNNING.append(process)
    try:
        if write_fd >= 0:
            os.close(write_fd)
            os.set_blocking(read_fd, False)
            drainer = threading.Thread(target=drain_pipe, args=(read_fd, received, done))
            drainer.start()
        wait_ready(port, process)
        wrk(port, 1, args.connections, client_cpu, args.path)  # warm-up
        cpu_before = cpu_seconds(process.pid)
        rate, requests = wrk(port, args.duration, args.connections, client_cpu, args.path)
        cpu_per_request = (cpu_seconds(process.pid) - cpu_before) / requests * 1e6
    except Exception:
        stop(process)
        sys.stderr.write((process.stderr.read() if process.stderr else b"").decode())
        raise
    finally:
        stop(process)
        if drainer is not None:
            drainer.join(10)
            done.set()
            os.close(read_fd)
    records = 0
    if received:
        from tracer.server.hook_channel import HookChannelReader

        reader = HookChannelReader(os.open(os.devnull, os.O_RDONLY))
        records = len(reader.feed(bytes(received)))
        if reader.dropped:
            print(f"  note: the server dropped {reader.dropped} hook records (pipe full)")
        reader.close()
    return rate, cpu_per_request, records


def loops_available(choice: str) -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        have_uvloop = False
    else:
        have_uvloop = True
    if choice == "both":
        return ["uvloop", "asyncio"] if have_uvloop else ["asyncio"]
    if choice == "uvloop" and not have_uvloop:
        raise SystemExit("uvloop is not installed")
    return [choice]


def print_table(
    rates: dict[tuple[str, str], list[float]],
    cpus: dict[tuple[str, str], list[float]],
    loops: list[str],
) -> None:
    variants = ("uvicorn", "reqtrace", "reqtrace+hooks")
    print()
    header = f"{'variant':<16} {'loop':<8} {'req/s per run':<34} {'median':>8} {'best':>8}"
    print(f"{header}   {'CPU us/req (median, best)':>26}")
    for loop in loops:
        for variant in variants:
            runs = rates[(variant, loop)]
            cpu = cpus[(variant, loop)]
            shown = " ".join(f"{r:8.0f}" for r in runs)
            print(
                f"{variant:<16} {loop:<8} {shown:<34} {statistics.median(runs):8.0f} "
                f"{max(runs):8.0f}   {statistics.median(cpu):12.2f} {min(cpu):12.2f}"
            )
    print()
    print("ratios (median req/s | best req/s | server CPU per request, median):")
    for loop in loops:
        uv, off, on = (rates[(v, loop)] for v in variants)
        uv_cpu, off_cpu, on_cpu = (statistics.median(cpus[(v, loop)]) for v in variants)
        med = statistics.median
        print(
            f"  {loop:<8} reqtrace/uvicorn   = {med(off) / med(uv):.2f}x | "
            f"{max(off) / max(uv):.2f}x | {uv_cpu / off_cpu:.2f}x"
        )
        print(
            f"  {loop:<8} hooks-on/hooks-off = {med(on) / med(off):.2f}x | "
            f"{max(on) / max(off):.2f}x | {off_cpu / on_cpu:.2f}x"
            f"   (hooks: {on_cpu - off_cpu:+.2f} us CPU per request)"
        )


# In-process CPU per request ------------------------------------------------------------
class _FakeSocket:
    def fileno(self) -> int:
        return 99


class _FakeTransport:
    """Enough of asyncio.Transport for the protocol; writes go nowhere."""

    def __init__(self) -> None:
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        info = {
            "socket": _FakeSocket(),
            "peername": ("127.0.0.1", 40000),
            "sockname": ("127.0.0.1", 8000),
        }
        return info.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _cpu_per_request(mode: str, requests: int) -> float:
    from tracer.server.config import Config
    from tracer.server.hook_channel import HookChannelWriter
    from tracer.server.hooks import wire_emitter
    from tracer.server.protocol import HttpProtocol
    from tracer.server.state import ServerState

    namespace: dict[str, object] = {}
    exec(HELLO_APP, namespace)
    app = namespace["app"]
    loop = asyncio.get_running_loop()
    emit = None
    writer = None
    read_fd = -1
    if mode == "hooks on, no-op sink":
        emit = lambda wire: None  # noqa: E731
    elif mode == "hooks on, pipe channel":
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        writer = HookChannelWriter(write_fd)
        emit = wire_emitter(writer)
    state = ServerState(Config(app=app, access_log=False), app, {}, emit)
    protocols = []
    for _ in range(50):
        protocol = HttpProtocol(state, loop)
        protocol.connection_made(_FakeTransport())  # type: ignore[arg-type]
        protocols.append(protocol)
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # what wrk sends
    started = time.thread_time()  # CPU time of this thread: other processes do not count
    for round_number in range(requests // 50):
        for protocol in protocols:
            protocol.data_received(request)
        await asyncio.sleep(0)  # the app tasks run
        await asyncio.sleep(0)
        if read_fd >= 0 and round_number % 16 == 0:  # the tracer's side, kept out of the way
            with contextlib.suppress(BlockingIOError):
                while os.read(read_fd, 1 << 20):
                    pass
    elapsed = time.thread_time() - started
    if writer is not None:
        writer.close(timeout=0)
        os.close(read_fd)
    return elapsed / requests * 1e6


def flag_test_cost_ns() -> float:
    """What one `if self.timed:` costs when hooks are off (a slot read and a branch)."""

    class Probe:
        __slots__ = ("timed",)

        def __init__(self) -> None:
            self.timed = False

        def ten(self) -> None:
            for _ in range(100_000):
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass
                if self.timed:
                    pass

        def none(self) -> None:
            for _ in range(100_000):
                pass

    probe = Probe()
    with_tests = min(_timed(probe.ten) for _ in range(7))
    without = min(_timed(probe.none) for _ in range(7))
    return (with_tests - without) / 1_000_000 * 1e9


def _timed(function: object) -> float:
    started = time.perf_counter()
    function()  # type: ignore[operator]
    return time.perf_counter() - started


def in_process(loop_name: str) -> None:
    from tracer.server.main import new_event_loop

    modes = ("hooks off", "hooks on, no-op sink", "hooks on, pipe channel")
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    loop, _ = new_event_loop(loop_name)
    try:
        for _ in range(7):
            for mode in modes:
                samples[mode].append(loop.run_until_complete(_cpu_per_request(mode, 20_000)))
    finally:
        loop.close()
    off = statistics.median(samples["hooks off"])
    print(f"\nserver CPU per request, in process ({loop_name}, fake transport, median of 7):")
    for mode in modes:
        value = statistics.median(samples[mode])
        print(f"  {mode:<24} {value:6.2f} us   (+{value - off:4.2f} us)")
    flag = flag_test_cost_ns()
    print(
        f"  hooks off: 10 flag tests per request x {flag:.1f} ns = {10 * flag:.0f} ns"
        f" ({10 * flag / (off * 1000) * 100:.1f}% of the request)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--loop", choices=("both", "uvloop", "asyncio"), default="both")
    parser.add_argument("--no-in-process", action="store_true", help="skip the CPU breakdown")
    parser.add_argument(
        "--app",
        default="bench_hello:app",
        help="another app to serve, importable from the repository root, e.g. "
        "tests.server_apps.fastapi_app:app (default: the built-in hello world)",
    )
    parser.add_argument("--path", default="/", help="request target for wrk (default /)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    pins: tuple[int | None, int | None] = (None, None)
    if (os.cpu_count() or 1) >= 2:
        pins = (0, 1)
        os.sched_setaffinity(0, {1})  # this script (and the hook pipe reader) stays off CPU 0
    loops = loops_available(args.loop)
    variants = ["uvicorn", "reqtrace", "reqtrace+hooks"]
    rates: dict[tuple[str, str], list[float]] = {(v, lp): [] for v in variants for lp in loops}
    cpus: dict[tuple[str, str], list[float]] = {(v, lp): [] for v in variants for lp in loops}
    print(
        f"{args.app} {args.path}, wrk -t1 -c{args.connections} -d{args.duration:g}s keep-alive, "
        f"{args.runs} rounds, server on CPU {pins[0]}, wrk on CPU {pins[1]}, access logs off"
    )
    with tempfile.TemporaryDirectory(prefix="reqtrace-bench-") as app_dir:
        Path(app_dir, "bench_hello.py").write_text(HELLO_APP)
        if args.app != "bench_hello:app":
            app_dir = str(ROOT)
        for round_number in range(args.runs):
            for loop in loops:
                order = variants[round_number % 3 :] + variants[: round_number % 3]
                for variant in order:
                    rate, cpu, records = measure(variant, loop, app_dir, args, pins)
                    rates[(variant, loop)].append(rate)
                    cpus[(variant, loop)].append(cpu)
                    extra = f", {records} hook records received" if records else ""
                    label = f"round {round_number + 1} {loop:<7} {variant:<15}"
                    print(f"  {label} {rate:9.0f} req/s  ({cpu:.2f} us CPU/req{extra})", flush=True)
    print_table(rates, cpus, loops)
    if not args.no_in_process:
        for loop in loops:
            in_process(loop)
    return 0


def _cleanup(*_: object) -> None:
    for process in list(RUNNING):
        with contextlib.suppress(Exception):
            process.kill()
    raise SystemExit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _cleanup)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        _cleanup()
    finally:
        for leftover in list(RUNNING):
            with contextlib.suppress(Exception):
                leftover.kill()
