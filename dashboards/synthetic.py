"""Synthetic request traces for the dashboard's tests and benchmarks (scripts/bench_dashboard).

`make_trace` builds one loopback-shaped trace by hand (the tests' fixture). `TraceSource`
makes a stream of them the way the demo's load looks (/, /json, /slow, /cpu, uploads, large
responses, errors), cheaply enough to feed tens of thousands a second: each trace is a
precomputed template shifted to its time. `PacedFeeder` is a thread that puts them into a
LiveFeed at a fixed rate, as the tracer's pipeline thread does (a batch every 20 ms), and
counts the CPU time its `put()` calls cost, which is the dashboard's work done on the
producer's thread.

Stage rows come from the registry (tracer/model/stages.py), so stages added there appear here.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from dashboards.feed import LiveFeed
from tracer.model.stages import LAYER_OF, STAGE_NAMES
from tracer.model.trace import ConnectionFacts, RequestTrace, Stage

BASE_NS = 5_000_000_000_000
LOOPBACK_NOTE = "nic_irq: no hardware interrupt: packet came from lo (software device)"

# Typical durations (ns) of the stages on loopback; the app's and body's come from the path.
_LOOPBACK_NS: dict[str, int] = {
    "backlog": 3_000,
    "softirq": 4_000,
    "ip_tcp": 9_000,
    "wakeup": 25_000,
    "event_loop": 6_000,
    "recv": 5_000,
    "parse": 12_000,
    "send": 20_000,
}
new_tuple = tuple.__new__
_SERVER = ("127.0.0.1", 8000)
_NO_DETAILS: dict[str, int] = {}
_CONNECTION = ConnectionFacts(
    handshake_us=35.0, accept_queue_us=120.0, srtt_us=28, rcv_wnd=65_483, snd_wnd=65_536
)


def _plan(app_ns: int, body_ns: int = 0) -> list[tuple[str, int]]:
    """(stage, duration) in registry order: loopback stages, the app, a body if any."""
    plan = []
    for name in STAGE_NAMES:
        if name == "app":
            plan.append((name, app_ns))
        elif name == "body":
            if body_ns:
                plan.append((name, body_ns))
        elif name in _LOOPBACK_NS:
            plan.append((name, _LOOPBACK_NS[name]))
    return plan


def make_trace(
    number: int,
    path: str = "/",
    app_us: int = 50,
    status: int = 200,
    method: str = "GET",
    start_ns: int | None = None,
    complete: bool = True,
    notes: tuple[str, ...] = (),
) -> RequestTrace:
    """A loopback-shaped trace: backlog, softirq, ip_tcp, wakeup, loop, recv, parse, app, send."""
    start = BASE_NS + number * 10_000_000 if start_ns is None else start_ns
    stages, at = [], start
    for name, duration in _plan(app_us * 1_000):
        stages.append(Stage(name, LAYER_OF[name], at, at + duration))
        at += duration
    return RequestTrace(
        id=number,
        pid=4242,
        fd=12,
        conn_id=1 + number // 10,
        seq=1 + number % 10,
        method=method,
        path=path,
        status=status,
        client=("127.0.0.1", 50_000 + number),
        server=("127.0.0.1", 8000),
        start_ns=start,
        end_ns=at,
        complete=complete,
        stages=tuple(stages),
        notes=notes or (LOOPBACK_NOTE,),
        connection=_CONNECTION,
        details={"recv_calls": 1, "recv_bytes": 120, "segments": 1, "send_calls": 1},
    )


@dataclass(frozen=True)
class _Template:
    method: str
    path: str
    status: int
    offsets: tuple[tuple[str, str, int, int], ...]  # (name, layer, start, end) from start
    total_ns: int
    notes: tuple[str, ...]


# (weight, method, path, status, app µs, body µs): the demo's mix (tracer/demo/load.py).
DEMO_MIX: tuple[tuple[int, str, str, int, int, int], ...] = (
    (40, "GET", "/", 200, 40, 0),
    (25, "GET", "/json", 200, 90, 0),
    (10, "GET", "/slow", 200, 20_000, 0),
    (8, "GET", "/cpu", 200, 3_000, 0),
    (6, "POST", "/upload", 200, 400, 2_500),
    (6, "GET", "/large", 200, 900, 0),
    (3, "GET", "/error", 500, 120, 0),
    (2, "GET", "/missing", 404, 30, 0),
)


class TraceSource:
    """A stream of demo-like traces, made cheaply from a pool of jittered templates."""

    def __init__(self, seed: int = 1, pool: int = 1024) -> None:
        rng = random.Random(seed)
        weights = [entry[0] for entry in DEMO_MIX]
        self._templates: list[_Template] = []
        for _ in range(pool):
            _, method, path, status, app_us, body_us = rng.choices(DEMO_MIX, weights)[0]
            jitter = rng.lognormvariate(0, 0.35)
            plan = _plan(int(app_us * 1_000 * jitter), int(body_us * 1_000 * jitter))
            offsets, at = [], 0
            for name, duration in plan:
                duration = max(1, int(duration * rng.uniform(0.7, 1.4)))
                offsets.append((name, LAYER_OF[name], at, at + duration))
                at += duration
            notes = (LOOPBACK_NOTE,)
            self._templates.append(_Template(method, path, status, tuple(offsets), at, notes))
        self._next_id = 0
        self._port = 40_000

    def make(self, end_ns: int) -> RequestTrace:
        """The next trace, ending at `end_ns` (CLOCK_MONOTONIC ns)."""
        number = self._next_id
        self._next_id = number + 1
        template = self._templates[number % len(self._templates)]
        start = end_ns - template.total_ns
        # tuple.__new__ with every field in order, as the correlator builds them (the
        # NamedTuple constructors cost more than the rest of making a trace).
        stages = tuple(
            [
                new_tuple(Stage, (n, layer, start + a, start + b))
                for n, layer, a, b in template.offsets
            ]
        )
        port = self._port + number % 64
        return new_tuple(
            RequestTrace,
            (
                number, 4242, 12 + number % 64, 1 + number // 16, 1 + number % 16,
                template.method, template.path, template.status, ("127.0.0.1", port),
                _SERVER, start, end_ns, True, stages, template.notes, _CONNECTION, _NO_DETAILS,
                0, "", "1.1", "", (), (),
            ),
        )  # fmt: skip

    def batch(self, count: int, first_end_ns: int, last_end_ns: int) -> list[RequestTrace]:
        """`count` traces whose ends are spread evenly over [first_end_ns, last_end_ns]."""
        if count <= 0:
            return []
        step = (last_end_ns - first_end_ns) / count
        return [self.make(first_end_ns + int(step * (i + 1))) for i in range(count)]

    @property
    def made(self) -> int:
        return self._next_id


class PacedFeeder(threading.Thread):
    """Puts `rate` synthetic traces a second into `feed`, a batch every `period_s`.

    `put_cpu_ns` is the CPU time spent inside `feed.put()`: the dashboard's share of the
    producer thread's work. The rest of the thread (making the traces) stands for the
    tracer's pipeline and is not the dashboard's.
    """

    def __init__(
        self,
        feed: LiveFeed,
        rate: float,
        period_s: float = 0.02,
        source: TraceSource | None = None,
    ) -> None:
        super().__init__(name="synthetic-feeder", daemon=True)
        self.feed = feed
        self.rate = rate
        self.period_s = period_s
        self.source = source or TraceSource()
        self.stop_event = threading.Event()
        self.put_cpu_ns = 0
        self.put_traces = 0

    def run(self) -> None:
        began = time.monotonic_ns()
        last_end = began
        while not self.stop_event.wait(self.period_s):
            now = time.monotonic_ns()
            due = int(self.rate * (now - began) / 1e9) - self.put_traces
            batch = self.source.batch(due, last_end, now)
            last_end = now
            before = time.thread_time_ns()
            self.feed.put(batch)
            self.put_cpu_ns += time.thread_time_ns() - before
            self.put_traces += len(batch)

    def stop(self) -> None:
        self.stop_event.set()
