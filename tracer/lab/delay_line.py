"""The delay line: a layer-2 forwarder that delays, jitters and drops frames, in user space.

Why it exists: the kernels we build on have no netem (CONFIG_NET_SCH_NETEM unset), yet a
teaching lab needs "add 5 ms and watch which stage grows". `lab up` then puts a router
namespace between server and client, with two veths that have no addresses, and runs this
process inside it. It reads every frame arriving on one veth through an AF_PACKET socket
and writes it to the other one after the configured delay.

Theory of operation:
- one AF_PACKET/SOCK_RAW socket per device, bound to it, promiscuous, ignoring the frames
  we transmit ourselves (PACKET_IGNORE_OUTGOING, and the PACKET_OUTGOING type as a belt);
- a frame arriving from the server side travels in direction "server" (server -> client),
  from the client side in direction "client"; impairments apply per direction;
- loss is decided on arrival (a seeded random.Random per direction, so runs repeat);
- release = max(previous release in this direction, arrival + delay + uniform(-j, +j)),
  which keeps each direction in FIFO order like a real link (netem reorders; we do not);
- frames wait in one heap ordered by (release, sequence); select() sleeps until the
  earliest release or the next readable socket (select has microsecond timeouts, poll only
  milliseconds, and the process asks for 1 ns timer slack);
- counters (per direction: received, forwarded, dropped, send errors, queue high-water mark)
  go to a JSON file a few times a second and at exit, for `lab status` and the tests;
- SIGTERM/SIGINT end the loop through a wakeup pipe; a vanished device ends it too.

The lab disables TSO/GSO/GRO and checksum offload on every lab veth: a frame read here is
then complete (checksummed, at most MTU-sized) and can be sent again as it is.

    ip netns exec rtlab-router python -m tracer.lab.delay_line --server-dev rtlab-r0 \
        --client-dev rtlab-r1 --delay-ms 5 --counters /run/reqtrace-lab/rtlab.counters.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PR_SET_TIMERSLACK = 29
MAX_FRAME = 65535
BATCH = 256  # frames read per socket per wakeup, so releases are not starved
COUNTERS_EVERY_NS = 250_000_000
DEVICE_GONE = {errno.ENETDOWN, errno.ENODEV, errno.ENXIO}
DIRECTIONS = ("server", "client")


@dataclass
class DirectionCounters:
    """What happened to the frames travelling one way."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0  # by the loss probability
    send_errors: int = 0
    queued: int = 0
    max_queued: int = 0


@dataclass(frozen=True)
class DirectionConfig:
    delay_ns: int
    jitter_ns: int
    loss: float  # probability, 0..1


class Stop(Exception):
    """Raised inside the loop when a device disappears; the lab is going down."""


def _packet_socket(device: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((device, ETH_P_ALL))
    index = socket.if_nametoindex(device)
    membership = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)
    with contextlib.suppress(OSError):  # before 4.20 the pkttype check alone filters
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setblocking(False)
    return sock


def _ask_for_precise_timers() -> None:
    """Timer slack defaults to 50 µs for normal tasks; 1 ns makes sleeps end on time."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class DelayLine:
    """Forward frames between two devices with per-direction delay, jitter and loss."""

    def __init__(
        self,
        server_dev: str,
        client_dev: str,
        configs: dict[str, DirectionConfig],
        seed: int | None,
        counters_file: Path | None,
    ) -> None:
        self.sockets = {"server": _packet_socket(server_dev), "client": _packet_socket(client_dev)}
        # a frame read on the server-side device travels toward the client, and vice versa
        self.outputs = {"server": self.sockets["client"], "client": self.sockets["server"]}
        self.configs = configs
        base = seed if seed is not None else random.SystemRandom().randrange(1 << 62)
        self.rngs = {name: random.Random(f"{base}:{name}") for name in DIRECTIONS}
        self.counters = {name: DirectionCounters() for name in DIRECTIONS}
        self.last_release = dict.fromkeys(DIRECTIONS, 0)
        self.heap: list[tuple[int, int, str, bytes]] = []
        self.sequence = 0
        self.counters_file = counters_file
        self.started_at = time.time()
        self.stopping = False
        self._dirty = True

    # -- frames ---------------------------------------------------------------------------

    def _arrive(self, direction: str, frame: bytes, now: int) -> None:
        counters = self.counters[direction]
        counters.received += 1
        self._dirty = True
        config = self.configs[direction]
        rng = self.rngs[direction]
        if config.loss and rng.random() < config.loss:
            counters.dropped += 1
            return
        jitter = round(rng.uniform(-config.jitter_ns, config.jitter_ns)) if config.jitter_ns else 0
        release = max(self.last_release[direction], now + config.delay_ns + jitter)
        self.last_release[direction] = release
        if release <= now:  # no delay and nothing queued ahead of it in this direction
            self._send(direction, frame)
            return
        self.sequence += 1
        heapq.heappush(self.heap, (release, self.sequence, direction, frame))
        counters.queued += 1
        counters.max_queued = max(counters.max_queued, counters.queued)

    def _send(self, direction: str, frame: bytes) -> None:
        counters = self.counters[direction]
        try:
            self.outputs[direction].send(frame)
            counters.forwarded += 1
        except OSError as exc:
            if exc.errno in DEVICE_GONE:
                raise Stop(f"device gone while sending: {exc.strerror}") from exc
            counters.send_errors += 1
        self._dirty = True

    def _release_due(self) -> None:
        now = time.monotonic_ns()
        while self.heap and self.heap[0][0] <= now:
            _, _, direction, frame = heapq.heappop(self.heap)
            self.counters[direction].queued -= 1
            self._send(direction, frame)

    def _drain(self, direction: str) -> None:
        sock = self.sockets[direction]
        for _ in range(BATCH):
            try:
                frame, address = sock.recvfrom(MAX_FRAME)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in DEVICE_GONE:
                    raise Stop(f"device gone while receiving: {exc.strerror}") from exc
                raise
            if address[2] == PACKET_OUTGOING:
                continue
            self._arrive(direction, frame, time.monotonic_ns())

    # -- loop -----------------------------------------------------------------------------

    def run(self, wakeup_fd: int) -> str:
        """Forward until a signal arrives (via wakeup_fd) or a device vanishes; says why."""
        by_fd = {sock.fileno(): name for name, sock in self.sockets.items()}
        watched = [*by_fd, wakeup_fd]
        next_counters = 0
        reason = "stopped by a signal"
        try:
            while not self.stopping:
                now = time.monotonic_ns()
                if now >= next_counters:
                    self.write_counters()
                    next_counters = now + COUNTERS_EVERY_NS
                deadline = next_counters if not self.heap else min(next_counters, self.heap[0][0])
                timeout = max(0, deadline - time.monotonic_ns()) / 1e9
                readable, _, _ = select.select(watched, [], [], timeout)
                for fd in readable:
                    if fd == wakeup_fd:
                        self.stopping = True
                    else:
                        self._drain(by_fd[fd])
                self._release_due()
        except Stop as exc:
            reason = str(exc)
        self.write_counters(running=False)
        return reason

    def snapshot(self, running: bool = True) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "running": running,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "config": {name: asdict(config) for name, config in self.configs.items()},
            "directions": {name: asdict(c) for name, c in self.counters.items()},
        }

    def write_counters(self, running: bool = True) -> None:
        if self.counters_file is None or (not self._dirty and running):
            return
        self._dirty = False
        temporary = self.counters_file.with_name(f".{self.counters_file.name}.{os.getpid()}")
        try:
            temporary.write_text(json.dumps(self.snapshot(running)) + "\n")
            os.replace(temporary, self.counters_file)
        except OSError as exc:
            print(f"delay line: cannot write counters: {exc}", file=sys.stderr, flush=True)


def _configs(args: argparse.Namespace) -> dict[str, DirectionConfig]:
    impaired = DirectionConfig(
        delay_ns=round(args.delay_ms * 1e6),
        jitter_ns=round(args.jitter_ms * 1e6),
        loss=args.loss_pct / 100,
    )
    clean = DirectionConfig(0, 0, 0.0)
    return {name: impaired if args.side in ("both", name) else clean for name in DIRECTIONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="layer-2 delay line of `reqtrace lab`")
    parser.add_argument("--server-dev", required=True, help="the device facing the server")
    parser.add_argument("--client-dev", required=True, help="the device facing the client")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss-pct", type=float, default=0.0)
    parser.add_argument("--side", choices=["server", "client", "both"], default="both")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--counters", type=Path, help="JSON file for the counters")
    args = parser.parse_args(argv)

    _ask_for_precise_timers()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)  # the wakeup fd does the work
    line = DelayLine(args.server_dev, args.client_dev, _configs(args), args.seed, args.counters)
    line.write_counters()
    config = ", ".join(f"{name}: {asdict(c)}" for name, c in line.configs.items())
    print(f"delay line {os.getpid()} started ({config})", file=sys.stderr, flush=True)
    print("READY", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # whoever waited for READY may close its end now
    reason = line.run(read_end)
    totals = ", ".join(
        f"{name}: {c.forwarded} forwarded, {c.dropped} dropped" for name, c in line.counters.items()
    )
    print(f"delay line {os.getpid()} exiting: {reason} ({totals})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
