"""Accuracy: inject a known cause, check the timeline puts it in the right stage, right size.

Every test runs the real thing: `reqtrace run` (probes, server child, correlator, recording)
serving tests/server_apps/accuracy_app.py, and a client (tests/lab_client.py) in the lab's
client namespace across a veth pair, or on loopback where the cause is not the network.
The client prints CLOCK_MONOTONIC times, the clock of the probes and the hooks (network
namespaces do not change it), so each trace is checked against what the client saw:

- the stages never add up to more than the server-side total (first kernel timestamp →
  last send exit);
- that total lies within the client's own request→response interval: it starts after the
  client began sending, and its response write began before the client had read the
  response (both exact); only the return of that last write may come later (see
  CLIENT_OVERLAP_NS).

Tolerances are stated where they are used, each with the reason for its size. They are
about the machine (a 2-core VM, timers, scheduling), never about reqtrace being vague: a
stage measures between two kernel or hook timestamps, exact to the nanosecond clock.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tracer.lab import Impairment, Lab, LabInfo
from tracer.model.trace import RequestTrace
from tracer.recording.reader import load_recording
from tracer.recording.report import build_report

from .helpers import ROOT
from .run_fixtures import free_port, reqtrace_run, stop, wait_listening

pytestmark = pytest.mark.bpf

APP = "tests.server_apps.accuracy_app:app"
MS = 1_000_000
US = 1_000
# The server's last send syscall returns after the kernel queued the response; on the other
# CPU the client may already read it while that syscall is still on its way back (µs). 1 ms
# leaves room for the server being preempted right at that point on a busy 2-core VM; a
# longer wait there (seen once: 2.3 ms, in CI, with a Python delay line forwarding a 4 MiB
# upload on the same 2 CPUs) must be time spent inside that send syscall.
CLIENT_OVERLAP_NS = 1 * MS

_serial = itertools.count(1)
SECOND_OCTET = 96 + os.getpid() % 64  # 10.96-159.x.0/24, apart from test_lab's 10.160-223


@dataclass
class ClientRequest:
    i: int
    start_ns: int
    sent_ns: int
    end_ns: int
    status: int
    size: int

    @property
    def latency_ns(self) -> int:
        return self.end_ns - self.start_ns


@contextlib.contextmanager
def lab(impairment: Impairment = Impairment()) -> Iterator[tuple[Lab, LabInfo]]:  # noqa: B008
    number = next(_serial)
    running = Lab(
        prefix=f"ra{os.getpid() % 10000}x{number}",
        subnet=f"10.{SECOND_OCTET}.{number}.0/24",
        impairment=impairment,
    )
    try:
        yield running, running.up()
    finally:
        running.down()


@contextlib.contextmanager
def traced(
    tmp_path: Path, host: str = "127.0.0.1", server_cpu: int | None = None
) -> Iterator[tuple[int, Path]]:
    """`reqtrace run` of the accuracy app on host; yields (port, recording path).

    With server_cpu, the served app runs on that CPU alone and the tracer on the other one,
    so that whatever the test puts on the server's CPU competes with the server only.
    """
    port = free_port(host)
    recording = tmp_path / f"accuracy-{port}.jsonl"
    pin = ["taskset", "-c", str(1 - server_cpu)] if server_cpu is not None else []
    args = ("--host", host, "--port", str(port), "--record", str(recording))
    with reqtrace_run(APP, *args, "--no-access-log", prefix=pin) as process:
        if server_cpu is not None:
            pin_server(process.pid, server_cpu)
        wait_listening(port, process, host=host)
        yield port, recording
        stop(process)


def pin_server(tracer_pid: int, cpu: int) -> None:
    """Move every thread of the server child of `reqtrace run` onto `cpu`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = psutil.Process(tracer_pid).children()
        servers = [c for c in children if "tracer.session.server_child" in c.cmdline()]
        if servers:
            for thread in servers[0].threads():
                os.sched_setaffinity(thread.id, {cpu})
            return
        time.sleep(0.05)
    raise AssertionError("reqtrace run never started its server")


def run_client(
    host: str, port: int, mode: str, *args: str, wrapper: Sequence[str] = ()
) -> list[ClientRequest]:
    argv = [sys.executable, "-m", "tests.lab_client", host, str(port), mode, *args]
    result = subprocess.run(
        [*wrapper, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return [
        ClientRequest(r["i"], r["start_ns"], r["sent_ns"], r["end_ns"], r["status"], r["bytes"])
        for r in rows
    ]


def paired(
    recording: Path, requests: list[ClientRequest]
) -> list[tuple[RequestTrace, ClientRequest]]:
    """Each client request with its trace (matched by the i=N in the query)."""
    loaded = load_recording(str(recording))
    assert loaded.footer is not None and not loaded.problems
    assert sum(loaded.footer["lost_records"].values()) == 0
    by_i: dict[int, RequestTrace] = {}
    for trace in loaded.traces:
        query = dict(part.split("=", 1) for part in trace.query.split("&") if "=" in part)
        if "i" in query:
            by_i[int(query["i"])] = trace
    assert set(by_i) == {r.i for r in requests}, "every request was traced"
    return [(by_i[r.i], r) for r in requests]


def check_consistent(trace: RequestTrace, client: ClientRequest) -> None:
    """The checks every accuracy test makes for every request."""
    assert trace.complete, trace.notes
    assert trace.status == client.status == 200
    assert sum(s.duration_ns for s in trace.stages) <= trace.total_ns
    # The kernel saw the request after the client sent it, and the response's write began
    # before the client had read the response: exact, one clock on both sides.
    send = trace.stage("send")
    assert send is not None, trace.notes
    assert trace.start_ns >= client.start_ns
    assert send.start_ns <= client.end_ns, (send, client)
    # The total ends when that write returned: soon after the client read it, or later only
    # because the server waited inside the syscall (then the send stage spans the excess).
    late_return_ns = trace.end_ns - client.end_ns
    assert late_return_ns <= CLIENT_OVERLAP_NS or (
        trace.end_ns == send.end_ns and late_return_ns < send.duration_ns
    ), (late_return_ns, send, client)


def stage_ns(trace: RequestTrace, name: str) -> int:
    stage = trace.stage(name)
    assert stage is not None, (name, trace.notes)
    return stage.duration_ns


def detail(trace: RequestTrace, key: str) -> Any:
    assert key in trace.details, (key, trace.details)
    return trace.details[key]


# ---- app code that sleeps -----------------------------------------------------------------


def test_app_sleep_is_the_app_stage(tmp_path: Path) -> None:
    sleep_ms = 40
    with lab() as (running, info), traced(tmp_path, info.server_addr) as (port, recording):
        requests = run_client(
            info.server_addr,
            port,
            "get",
            f"/sleep?ms={sleep_ms}",
            "--count",
            "10",
            wrapper=running.client_command([]),
        )
    for trace, client in paired(recording, requests):
        check_consistent(trace, client)
        assert detail(trace, "rx_dev") == info.server_device  # crossed the lab's veth
        app = stage_ns(trace, "app")
        # uvloop's timers run on libuv's loop clock, cached per loop iteration in whole
        # milliseconds: a 40 ms sleep may end up to 1 ms early (measured: 39.66 ms) or late
        # by that plus scheduling on a busy VM: 39 ms ≤ app < 40 ms + 6 ms.
        assert (sleep_ms - 1) * MS <= app < (sleep_ms + 6) * MS
        # Everything else of the request is small: the sleep went nowhere but the app stage.
        assert trace.total_ns - app < 5 * MS
        assert trace.dominant_stage().name == "app"  # type: ignore[union-attr]


# ---- delay on the link --------------------------------------------------------------------


def test_link_delay_is_in_the_connection_rtt_not_in_server_stages(tmp_path: Path) -> None:
    one_way_ms = 10  # on each direction: a 20 ms round trip
    impairment = Impairment(delay_ms=one_way_ms, side="both")
    with (
        lab(impairment) as (running, info),
        traced(tmp_path, info.server_addr) as (port, recording),
    ):
        requests = run_client(
            info.server_addr, port, "get", "/hello", "--count", "10",
            wrapper=running.client_command([]),
        )  # fmt: skip
    rtt_ns = 2 * one_way_ms * MS
    for trace, client in paired(recording, requests):
        check_consistent(trace, client)
        srtt_us = trace.connection.srtt_us
        assert srtt_us is not None
        # The delay line never releases a frame early; it adds ~0.2 ms per pass (measured:
        # 20.8 ms median ping at 2 x 10 ms) and the client's ACK may wait for its next
        # request (µs here); srtt smooths samples: 20 ms ≤ srtt < 20 ms + 3 ms.
        assert rtt_ns <= srtt_us * US < rtt_ns + 3 * MS
        # None of the delay lands in a server-side stage: the request is served as fast as
        # without it (a /hello takes well under 5 ms end to end on the server here).
        assert trace.total_ns < 5 * MS
        # The client waited a whole round trip (the request out, the response back) on top.
        assert client.latency_ns >= trace.total_ns + rtt_ns


# ---- a CPU hog on the server's CPU --------------------------------------------------------


def test_cpu_hog_on_the_servers_cpu_grows_the_wakeup_stage(tmp_path: Path) -> None:
    """A real-time hog spinning 4 ms in every 8 ms on the server's CPU: a request whose data
    arrives during a spin waits for the spin's end in the wakeup stage, and only there."""
    busy_ms = 4
    with traced(tmp_path, server_cpu=1) as (port, recording):
        hog = subprocess.Popen(
            [sys.executable, "-m", "tests.cpu_hog", "--cpu", "1", "--busy-ms", str(busy_ms),
             "--idle-ms", "4", "--duration", "4"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            # The client on the other CPU, pausing between requests so that the server
            # waits in epoll when each request arrives (the wakeup path, not a busy loop).
            requests = run_client(
                "127.0.0.1", port, "get", "/hello", "--count", "150", "--think-ms", "3",
                wrapper=["taskset", "-c", "0"],
            )  # fmt: skip
        finally:
            spins, _ = hog.communicate(timeout=30)
    intervals = [tuple(pair) for pair in json.loads(spins)]
    hit, missed = [], []
    for trace, client in paired(recording, requests):
        check_consistent(trace, client)
        wakeup = trace.stage("wakeup")
        if wakeup is None:
            continue  # the loop was busy when the data came (no sleep to wake from)
        spin_end = next((end for start, end in intervals if start <= wakeup.start_ns < end), 0)
        if spin_end:
            hit.append((trace, wakeup, spin_end))
        else:
            missed.append(wakeup.duration_ns)
    assert len(hit) >= 20, f"only {len(hit)} requests arrived during a spin"
    for trace, wakeup, spin_end in hit:
        # The server could not run before the spin ended (50 µs: the hog reads the clock
        # just after its last spin iteration, the kernel switches just before).
        assert wakeup.end_ns >= spin_end - 50 * US, trace.details
    # The other stages did not absorb the hog: they stay as small as without it (a /hello
    # is served in ~150 µs here). Not for every request: the VM's host preempts its vCPUs
    # (steal time, measured 30-370 ms on the server's CPU during one 14 s run of this
    # test), and a request the host stalls after its wakeup shows that stall in the stage
    # it fell in (seen: 2.9 ms of app, 2.8 ms of send). Hence at most one in twenty, and
    # the median.
    rest = {trace.id: trace.total_ns - wakeup.duration_ns for trace, wakeup, _ in hit}
    absorbed = [
        ", ".join(f"{s.name} at {s.start_ns - end:+} ns for {s.duration_ns} ns" for s in t.stages)
        for t, _, end in hit
        if rest[t.id] >= 2 * MS
    ]
    assert len(absorbed) <= max(1, len(hit) // 20), absorbed
    assert statistics.median(rest.values()) < 500 * US, rest
    # Typically the server runs right after the spin: waking and returning from epoll takes
    # tens of µs here. Not every time (kernel threads, or the hog's own wakeup, may run
    # first), hence the median, and 500 µs.
    lateness = [wakeup.end_ns - spin_end for _, wakeup, _ in hit]
    assert statistics.median(lateness) < 500 * US, lateness
    # The wait is accounted as waiting for the CPU: on the run queue after the wakeup (the
    # thread slept in epoll), or before reaching epoll (the hog had preempted the thread on
    # its way back to epoll), never as the kernel's wake-up path. When the sched_wakeup was
    # not seen (the thread was already runnable) there is no split to check.
    split = [
        (trace.details.get("run_queue_us", 0) + trace.details.get("loop_busy_us", 0), w, end)
        for trace, w, end in hit
        if "run_queue_us" in trace.details or "loop_busy_us" in trace.details
    ]
    assert len(split) >= 0.7 * len(hit)
    accounted = [waited * US >= (end - w.start_ns) - 100 * US for waited, w, end in split]
    assert sum(accounted) >= 0.9 * len(split)
    waits = [wakeup.duration_ns for _, wakeup, _ in hit]
    assert statistics.median(waits) > 10 * statistics.median(missed or [1])


# ---- a large upload, and a rate-limited link ----------------------------------------------


def test_large_upload_is_the_body_stage_over_many_segments(tmp_path: Path) -> None:
    size = 4 << 20
    with lab() as (running, info), traced(tmp_path, info.server_addr) as (port, recording):
        requests = run_client(
            info.server_addr, port, "upload", "--bytes", str(size),
            wrapper=running.client_command([]),
        )  # fmt: skip
    [(trace, client)] = paired(recording, requests)
    check_consistent(trace, client)
    assert detail(trace, "request_body_bytes") == size
    # segments counts the TCP receive events (tcp_probe) folded into the reads: one per skb
    # TCP queued, which may carry several MSS once merged (measured: ~3.5 KB each here), never
    # more than 64 KiB (the largest GSO/GRO skb): ≥ 64 for 4 MiB; and many recv calls.
    assert detail(trace, "segments") >= size // 65536
    assert detail(trace, "body_recv_calls") >= 2
    body = stage_ns(trace, "body")
    # The upload takes most of the request: everything but the first read, parse and reply.
    assert body >= 0.8 * trace.total_ns
    assert trace.dominant_stage().name == "body"  # type: ignore[union-attr]


def test_rate_limited_upload_takes_size_over_rate_in_the_body_stage(tmp_path: Path) -> None:
    size, mbit = 2_000_000, 16
    impairment = Impairment(rate_mbit=mbit, side="client")  # the client's egress: uploads
    with (
        lab(impairment) as (running, info),
        traced(tmp_path, info.server_addr) as (port, recording),
    ):
        requests = run_client(
            info.server_addr, port, "upload", "--bytes", str(size),
            wrapper=running.client_command([]),
        )  # fmt: skip
    [(trace, client)] = paired(recording, requests)
    check_consistent(trace, client)
    # TBF counts whole frames: 1448 B of payload travel in 1514 B.
    expected_ns = size * 1514 / 1448 * 8 / (mbit * 1e6) * 1e9
    body = stage_ns(trace, "body")
    # The link cannot carry it faster than the rate: TBF's burst (4 ms of traffic, 8 KB)
    # is the only allowance, <1% here, so 0.97 x size/rate is a hard floor. It can be
    # slower: TBF drops what overflows its 50 ms queue and the client's TCP spends time
    # recovering (measured: 1.19x in one run), so the rate alone gives no tight ceiling...
    assert 0.97 * expected_ns <= body <= 1.5 * expected_ns, (body, expected_ns)
    # ...the client does. Its request→response interval is the upload plus one round trip
    # (µs on this link), the request head, the reply: the body stage is all but a few ms.
    assert client.latency_ns - 10 * MS <= body <= client.latency_ns


# ---- a slow reader -----------------------------------------------------------------------


def test_slow_reader_shows_in_the_send_stage(tmp_path: Path) -> None:
    size = 4 << 20
    with lab() as (running, info), traced(tmp_path, info.server_addr) as (port, recording):
        requests = run_client(
            info.server_addr, port, "slow-read", "--bytes", str(size), "--chunk", "65536",
            "--pause-ms", "20", "--rcvbuf", "65536", wrapper=running.client_command([]),
        )  # fmt: skip
    [(trace, client)] = paired(recording, requests)
    check_consistent(trace, client)
    send = stage_ns(trace, "send")
    # The client takes 64 KiB every 20 ms: ~1.3 s for 4 MiB. The server's send buffer holds
    # at most a few MiB, so it waits for the reader for most of that time, in the send stage.
    assert send >= 0.5 * client.latency_ns
    # The socket was full: the event loop wrote what fit, waited until it was writable,
    # wrote more (asyncio writes only when writable, so no EAGAIN is seen) - many calls.
    assert detail(trace, "send_calls") >= 2
    assert detail(trace, "send_bytes") >= size
    assert trace.dominant_stage().name == "send"  # type: ignore[union-attr]


# ---- a request that holds the event loop --------------------------------------------------


def _burns_and_fast_requests(
    port: int, burns: int, burn_ms: int, log: Path
) -> list[tuple[int, int]]:
    """One client has the app burn `burn_ms` of the loop `burns` times (after answering);
    another sends /hello on a keep-alive connection meanwhile, so some arrive during a burn.
    Returns the burns' (start, end) as the app measured them. Bounded: ~burns x 30 ms."""
    stop_fast = threading.Event()

    def fast() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop_fast.is_set() and i < 5_000:
            connection.request("GET", f"/hello?i={i}")
            connection.getresponse().read()
            i += 1
            time.sleep(0.0007)
        connection.close()

    thread = threading.Thread(target=fast, daemon=True)
    thread.start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(burns):
            time.sleep(0.02)
            connection.request("GET", f"/burn?ms={burn_ms}&log={log}")
            connection.getresponse().read()
        time.sleep(0.05)  # the last burn ends
    finally:
        connection.close()
        stop_fast.set()
        thread.join(timeout=20)
    intervals = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert len(intervals) == burns
    return intervals  # type: ignore[return-value]


def test_a_request_that_holds_the_loop_is_blamed_for_the_wait_of_the_others(
    tmp_path: Path,
) -> None:
    """A route burns 5 ms of CPU on the event loop while fast requests arrive: every fast
    request whose data arrived during a burn waits in a loop-wait stage that ends when the
    burn does, and names the burning request as the holder; no wait is called wakeup."""
    burn_ms = 5
    with traced(tmp_path, server_cpu=1) as (port, recording):
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})  # the clients stay off the server's CPU
        try:
            burns = _burns_and_fast_requests(port, 30, burn_ms, tmp_path / "burns.log")
        finally:
            os.sched_setaffinity(0, before)
    loaded = load_recording(str(recording))
    assert loaded.footer is not None and not loaded.problems
    traces = loaded.traces
    by_id = {trace.id: trace for trace in traces}
    for trace in traces:  # every request: its stages tile its total (within 1% or 20 µs)
        covered = sum(stage.duration_ns for stage in trace.stages)
        assert abs(trace.total_ns - covered) <= max(20 * US, trace.total_ns // 100), trace

    waited = []  # (lag after the burn's end, trace) per fast request that arrived in a burn
    for trace in traces:
        if trace.path != "/hello" or not trace.complete:
            continue
        for start, end in burns:
            if start < trace.start_ns < end - 300 * US:
                stages = [s for s in trace.stages if s.name in ("loop_busy", "loop_queue")]
                assert stages, (trace.stages, trace.notes)
                assert trace.stage("wakeup") is None, trace.stages
                wait = stages[0]
                assert wait.start_ns <= end <= wait.end_ns, (wait, end)
                holders = [b for b in trace.blame_of(wait.name) if b.holder]
                assert holders, trace.blame
                holder = by_id.get(holders[0].holder)
                assert holder is not None and holder.path == "/burn", holders
                assert holders[0].ns >= (end - max(start, wait.start_ns)) * 0.95, holders
                waited.append((wait.end_ns - end, trace))
    assert len(waited) >= 10, f"only {len(waited)} fast requests arrived during a burn"
    lags = sorted(lag for lag, _ in waited)
    # The loop goes back to epoll right after the burning request returns (tens of µs: the
    # log line, the app's return, the end of its cycle). The VM's host steals the server's
    # vCPU now and then (see the hog test), so one wait in ten may end later, never by more
    # than 2 ms.
    assert lags[int(len(lags) * 0.9) - 1] <= 200 * US, lags
    assert lags[-1] <= 2 * MS, lags
    # The report says the same per route: /hello waited for the loop, /burn held it.
    report = build_report(loaded, by="path")
    assert report["loop_holders"][0]["holder"] == "GET /burn"
    assert report["loop_holders"][0]["waits"] >= len(waited)
    hello = report["groups"]["/hello"]["stages"]
    assert hello["loop_busy"]["max_us"] >= (burn_ms - 1) * 1000
    assert report["groups"]["/burn"]["requests"] == len(burns)


# ---- a request sent while the app is still starting --------------------------------------


def test_a_request_sent_while_the_app_starts_waits_in_the_startup_stage(tmp_path: Path) -> None:
    """The socket listens from the start (the tracer made it), so a request sent while the
    app's lifespan startup (1.5 s) runs waits in the accept queue: that wait is `startup`,
    not a wakeup, and is this request's dominant stage."""
    port = free_port()
    recording = tmp_path / "startup.jsonl"
    args = ("--port", str(port), "--record", str(recording), "--no-access-log")
    with reqtrace_run("tests.server_apps.accuracy_app:slow_start", *args) as process:
        deadline = time.monotonic() + 60
        while True:  # the first moment the port takes connections (the app is starting)
            assert process.poll() is None and time.monotonic() < deadline
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.connect()
                break
            except OSError:
                time.sleep(0.01)
        sent = time.monotonic_ns()
        connection.request("GET", "/hello?i=0")
        assert connection.getresponse().read() == b"hello\n"
        answered = time.monotonic_ns()
        connection.close()
        stop(process)
    [trace] = [t for t in load_recording(str(recording)).traces if t.query == "i=0"]
    startup = trace.stage("startup")
    assert startup is not None, (trace.stages, trace.notes)
    assert trace.stage("wakeup") is None
    assert sent <= startup.start_ns and startup.end_ns <= answered
    assert startup.duration_ns >= 1_000 * MS  # most of the 1.5 s startup was still to come
    assert trace.dominant_stage() == startup
    assert sum(s.duration_ns for s in trace.stages) == trace.total_ns
