"""A small, bounded HTTP load generator for `reqtrace demo` (and the lab).

It runs as its own process so its CPU use does not compete with the tracer's Python
threads, sends a weighted mix of the demo app's endpoints over a few keep-alive
connections, reconnects now and then (so handshakes and accepts show up too), and stops by
itself: after --duration seconds, after --max-requests requests, or when its parent exits.

    python -m tracer.demo.load --port 8000 --rate 100 --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass

MIX: tuple[tuple[str, str, int], ...] = (
    ("GET", "/", 45),
    ("GET", "/json", 15),
    ("GET", "/slow", 10),
    ("GET", "/cpu", 8),
    ("POST", "/upload", 8),
    ("GET", "/large", 7),
    ("GET", "/error", 4),
    ("GET", "/missing", 3),
)
UPLOAD = b"u" * (256 << 10)
REQUESTS_PER_CONNECTION = 50


@dataclass
class Counters:
    sent: int = 0
    failed: int = 0


def _request(method: str, path: str, host: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: reqtrace-demo-load\r\n"
    if method == "POST":
        body_headers = (
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(UPLOAD)}\r\n"
        )
        return (head + body_headers + "\r\n").encode() + UPLOAD
    return head.encode() + b"\r\n"


async def _read_response(reader: asyncio.StreamReader) -> bool:
    """Read one response; False when the server closed the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    return not close


async def _worker(
    number: int, args: argparse.Namespace, counters: Counters, stop_at: float
) -> None:
    rng = random.Random(args.seed * 1000 + number)
    choices = [(m, p) for m, p, _ in MIX]
    weights = [w for _, _, w in MIX]
    interval = args.connections / args.rate
    while time.monotonic() < stop_at and counters.sent < args.max_requests:
        try:
            reader, writer = await asyncio.open_connection(args.host, args.port)
        except OSError:
            counters.failed += 1
            await asyncio.sleep(0.5)
            continue
        try:
            for _ in range(REQUESTS_PER_CONNECTION):
                if time.monotonic() >= stop_at or counters.sent >= args.max_requests:
                    break
                started = time.monotonic()
                method, path = ("GET", args.path) if args.path else rng.choices(choices, weights)[0]
                writer.write(_request(method, path, args.host))
                await writer.drain()
                counters.sent += 1
                if not await asyncio.wait_for(_read_response(reader), timeout=10):
                    break
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            counters.failed += 1
            await asyncio.sleep(0.1)
        finally:
            writer.close()


async def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> Counters:
    counters = Counters()
    stop_at = time.monotonic() + args.duration
    workers = [
        asyncio.create_task(_worker(number, args, counters, stop_at))
        for number in range(args.connections)
    ]
    watcher = asyncio.create_task(_watch_parent(os.getppid()))
    done, _ = await asyncio.wait([watcher, *workers], return_when=asyncio.FIRST_COMPLETED)
    if watcher in done:  # the parent went away: stop now
        for task in workers:
            task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    watcher.cancel()
    return counters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bounded HTTP load for the reqtrace demo app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", help="GET only this path (default: the demo app's mix)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, then stop")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.connections <= 0:
        parser.error("--rate and --connections must be positive")
    counters = asyncio.run(run(args))
    print(
        f"load generator: {counters.sent} requests sent, {counters.failed} failures",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
