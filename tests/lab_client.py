"""The client side of the accuracy suite, run inside the lab's client namespace.

    python -m tests.lab_client HOST PORT get PATH --count N [--think-ms T]
    python -m tests.lab_client HOST PORT upload --bytes N
    python -m tests.lab_client HOST PORT slow-read --bytes N --chunk C --pause-ms P

One keep-alive connection; prints one JSON line per request with what the client saw:
CLOCK_MONOTONIC ns when the request's first byte was handed to the kernel and when the last
byte of the response was read (the same clock as the probes and the server hooks: namespaces
do not virtualize it), the status and the response size. Each request carries `i=N` in its
query so the test can pair it with its trace.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def _read_response(
    sock: socket.socket, chunk: int = 65536, pause_s: float = 0.0
) -> tuple[int, int]:
    """Read one response with a Content-Length body; returns (status, body bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(chunk)
        if not part:
            raise ConnectionError("the server closed the connection mid-response")
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(v)
        for k, _, v in (line.partition(":") for line in lines[1:])
        if k.lower() == "content-length"
    )
    received = len(body)
    while received < length:
        if pause_s:
            time.sleep(pause_s)
        part = sock.recv(min(chunk, length - received))
        if not part:
            raise ConnectionError("the server closed the connection mid-body")
        received += len(part)
    return status, received


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab_client")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("mode", choices=["get", "upload", "slow-read"])
    parser.add_argument("path", nargs="?", default="/hello")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--bytes", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--pause-ms", type=float, default=0.0)
    parser.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF before connecting")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause between requests")
    args = parser.parse_args(argv)

    sock = socket.socket()
    if args.rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    sock.settimeout(60)
    sock.connect((args.host, args.port))
    host = f"{args.host}:{args.port}"
    for i in range(args.count):
        if i and args.think_ms:
            time.sleep(args.think_ms / 1000)
        separator = "&" if "?" in args.path else "?"
        if args.mode == "upload":
            target = f"/upload?i={i}"
            head = f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {args.bytes}\r\n\r\n"
            payload = head.encode() + b"u" * args.bytes
        elif args.mode == "slow-read":
            target = f"/download?bytes={args.bytes}&i={i}"
            payload = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        else:
            target = f"{args.path}{separator}i={i}"
            payload = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        start = time.monotonic_ns()
        sock.sendall(payload)
        sent = time.monotonic_ns()
        status, size = _read_response(sock, args.chunk, args.pause_ms / 1000)
        end = time.monotonic_ns()
        print(
            json.dumps(
                {
                    "i": i,
                    "target": target,
                    "start_ns": start,
                    "sent_ns": sent,
                    "end_ns": end,
                    "status": status,
                    "bytes": size,
                }
            ),
            flush=True,
        )
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
