"""A CPU hog with a known schedule, for the accuracy suite's wakeup test.

    python -m tests.cpu_hog --cpu 1 --busy-ms 4 --idle-ms 4 --duration 3

Pinned to one CPU as a real-time task (SCHED_FIFO 1), it alternates spinning for
`busy-ms` and sleeping for `idle-ms`. While it spins, no ordinary (SCHED_OTHER) task on that
CPU can run: a server thread woken then must wait until the spin ends. It prints the spin
intervals (CLOCK_MONOTONIC ns) as JSON at the end: the ground truth the test compares the
wakeup stage with. Real-time, so the schedulers' fairness cannot blur the truth; 50% duty
cycle, bounded duration, far from the kernel's RT throttling limit (95%).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cpu_hog")
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--busy-ms", type=float, default=4.0)
    parser.add_argument("--idle-ms", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    busy_ns, idle_s = int(args.busy_ms * 1e6), args.idle_ms / 1000
    intervals: list[tuple[int, int]] = []
    stop = time.monotonic_ns() + int(args.duration * 1e9)
    now = time.monotonic_ns
    while now() < stop:
        start = now()
        end = start + busy_ns
        while now() < end:
            pass
        intervals.append((start, now()))
        time.sleep(idle_s)
    json.dump(intervals, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
