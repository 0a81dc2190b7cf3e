"""Benchmark the correlator offline: records/s through Correlator.feed().

A synthetic keep-alive workload (tracer/correlate/synthetic.py: N connections on lo, each
request = one read with its receive path, one write, one RequestTiming) is delivered in
live arrival order (two streams in 20 ms batches, CPUs interleaved) and fed to a fresh
Correlator. Printed side by side, from the same run (median of rounds):

  - records/s and requests/s through feed() + flush(), and µs per request;
  - the reorder window alone (push + release of the same records), and the ratio of the
    whole correlator to it: the cost of joining and building traces on top of sorting.

The target for a live run is >= 200k records/s on the 2-core test machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracer.correlate.correlator import Correlator, FeedRecord  # noqa: E402
from tracer.correlate.reorder import ReorderBuffer  # noqa: E402
from tracer.correlate.synthetic import MS, US, Scenario, arrival_order, event_time  # noqa: E402


def workload(requests: int, connections: int, rate_per_s: int) -> list[FeedRecord]:
    """Records of `requests` requests spread round-robin over keep-alive connections."""
    scenario = Scenario()
    gap = 1_000_000_000 // rate_per_s
    start = 1_000 * MS
    scripts = [
        scenario.connect(start + i * 50 * US, 40_000 + i, 10 + i) for i in range(connections)
    ]
    t = start + connections * 50 * US + 1 * MS
    for i in range(requests):
        scripts[i % connections].request(t, path=f"/item/{i % 97}", cpu=i % 2)
        t += gap
    for script in scripts:
        script.close(t)
        t += 50 * US
    return arrival_order(scenario.records)


def time_correlator(records: list[FeedRecord]) -> tuple[float, int]:
    correlator = Correlator()
    feed = correlator.feed
    emitted = 0
    began = time.perf_counter()
    for record in records:
        emitted += len(feed(record))
    emitted += len(correlator.flush())
    return time.perf_counter() - began, emitted


def time_reorder_only(records: list[FeedRecord]) -> float:
    window: ReorderBuffer[FeedRecord] = ReorderBuffer(250 * MS, 1 << 18)
    push, release = window.push, window.release
    began = time.perf_counter()
    for record in records:
        push(event_time(record), record)
        release()
    window.drain()
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=20_000, help="requests/s of the workload")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    records = workload(args.requests, args.connections, args.rate)
    print(
        f"workload: {len(records)} records, {args.requests} requests,"
        f" {args.connections} connections, {args.rate} req/s, {args.rounds} rounds"
    )
    full: list[float] = []
    alone: list[float] = []
    for _ in range(args.rounds):  # alternate, so both see the same machine load
        seconds, emitted = time_correlator(records)
        if emitted != args.requests:
            print(f"error: {emitted} traces for {args.requests} requests", file=sys.stderr)
            return 1
        full.append(seconds)
        alone.append(time_reorder_only(records))
    for label, pick in (("best", min), ("median", statistics.median)):
        seconds, window_seconds = pick(full), pick(alone)
        print(
            f"{label:6}  correlator {len(records) / seconds:9,.0f} records/s"
            f"  {args.requests / seconds:8,.0f} requests/s"
            f"  {seconds / args.requests * 1e6:5.1f} µs/request"
            f"  | reorder window alone {len(records) / window_seconds:9,.0f} records/s"
            f"  | correlator/reorder time {seconds / window_seconds:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
