"""Who held the event loop while a request waited for it.

A request waits for its event loop in the loop-wait stages of the registry (loop_busy,
loop_queue, handoff). The loop runs one callback at a time, so whatever ran during that
wait is to blame, and the server's timing hooks say when each request's code ran: every
stamp of a RequestTiming (headers parsed, app called, response started, each write, app
returned, ...) is a moment the loop was running that request.

Rule: between two consecutive stamps (in time, over the requests considered and the waiting
one) that belong to the SAME request, the loop was running that request's code: nothing
else left a stamp in between, and had the loop been idle the waiting request would not have
waited. A request that awaited something in between (a sleep, a database) has the waiting
request's own stamps inside that stretch, so it is not blamed for it. Everything else is
"other work": many short requests (under load the loop serves a batch of them before
coming back to epoll, and none of them holds it for long), callbacks without hooks,
garbage collection, background tasks, or a request still running when the waiting one was
emitted.

Only requests that could hold the loop for a wait's length are candidates: those whose app
ran at least `min_wait_ns` between two of its own stamps (`longest_app_step`; a request
that never did cannot hold the loop that long on its own). Under load every request waits
but none of them is such a candidate, so blaming costs a few stamps per waiting request;
a slow handler is named whenever it held the loop.

Cost: one comparison per request added (long ones are kept, bounded per thread); only waits
of at least `min_wait_ns` are examined, against the long requests whose span meets them.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise

from tracer.model.trace import Blame, Stage
from tracer.records.hooks import RequestTiming, request_stamps

MIN_WAIT_NS = 200_000
MAX_HOLDERS = 3  # holders named per wait; the rest joins "other work"
HISTORY = 1_024  # recent long requests kept per thread
SLACK_NS = 20_000_000  # requests are remembered in completion order, give or take this
MAX_CANDIDATES = 64

Holder = tuple[int, str, str]  # trace id, method, path
Recent = tuple[int, int, Holder, RequestTiming]  # first stamp, last stamp, holder, timing
ThreadKey = tuple[int, int]  # pid, tid


def stamps_of(timing: RequestTiming) -> list[int]:
    """Every moment the loop was running this request's code (sorted, no zeros)."""
    found = [*request_stamps(timing), *(ts for ts, _ in timing.chunks)]
    return sorted(ts for ts in found if ts)


def _span(timing: RequestTiming) -> tuple[int, int]:
    first = timing.first_byte_ns or timing.headers_done_ns or timing.app_called_ns
    last = max(timing.app_returned_ns, timing.response_done_ns, timing.headers_done_ns)
    if timing.chunks:
        last = max(last, timing.chunks[-1][0])
    return first, last


def longest_app_step(timing: RequestTiming) -> int:
    """The longest stretch between two consecutive stamps of the app's run (app called,
    response start, each write, app returned): the longest the app can have held the loop
    at a stretch. Waiting to be scheduled (headers → app called) does not count."""
    stamps = [timing.app_called_ns, timing.response_start_ns, timing.app_returned_ns]
    stamps += [ts for ts, _ in timing.chunks]
    stamps = sorted(ts for ts in stamps if ts)
    return max((b - a for a, b in pairwise(stamps)), default=0)


class LoopHistory:
    """Recent requests per event-loop thread, and the blame their stamps imply."""

    def __init__(self, min_wait_ns: int = MIN_WAIT_NS) -> None:
        self.min_wait_ns = min_wait_ns
        self._threads: dict[ThreadKey, deque[Recent]] = {}

    def add(self, trace_id: int, timing: RequestTiming) -> None:
        """Remember this request (emitted just now) if it could hold its loop for long."""
        key = (timing.pid, timing.tid)
        recent = self._threads.get(key)
        if recent is None:
            recent = self._threads[key] = deque(maxlen=HISTORY)
        first, last = _span(timing)
        if (
            first
            and last - first >= self.min_wait_ns
            and longest_app_step(timing) >= self.min_wait_ns
        ):
            recent.append((first, last, (trace_id, timing.method, timing.path), timing))

    def blame(
        self, trace_id: int, timing: RequestTiming, stages: tuple[Stage, ...], waits: frozenset[str]
    ) -> tuple[Blame, ...]:
        """Who held the loop during each loop-wait stage of a request (call before `add`)."""
        out: list[Blame] = []
        minimum = self.min_wait_ns
        for stage in stages:
            if stage.name not in waits or stage.end_ns - stage.start_ns < minimum:
                continue
            start, end = stage.start_ns, stage.end_ns
            candidates = self._candidates(timing, start, end)
            if not candidates:  # no request could have held the loop that long: other work
                out.append(Blame(stage.name, 0, "", "", end - start))
                continue
            me: Holder = (trace_id, timing.method, timing.path)
            stamps = [(ts, me) for ts in stamps_of(timing)]
            for holder, other in candidates:
                stamps += [(ts, holder) for ts in stamps_of(other)]
            stamps.sort()
            out += _shares(stage.name, start, end, _around(stamps, start, end), trace_id)
        return tuple(out)

    def _candidates(
        self, timing: RequestTiming, start: int, end: int
    ) -> list[tuple[Holder, RequestTiming]]:
        """Recent requests of the same thread whose span comes near [start, end]: the ones
        that ran during the wait, and the ones that ran last before it or first after it."""
        recent = self._threads.get((timing.pid, timing.tid))
        if not recent:
            return []
        margin = end - start
        low, high = start - margin, end + margin
        found: list[tuple[Holder, RequestTiming]] = []
        for first, last, holder, other in reversed(recent):
            if last < low - SLACK_NS or len(found) >= MAX_CANDIDATES:
                break
            if last >= low and first <= high:
                found.append((holder, other))
        return found


def _around(stamps: list[tuple[int, Holder]], start: int, end: int) -> list[tuple[int, Holder]]:
    """The stamps in [start, end] with the last one before and the first one after."""
    low = 0
    while low < len(stamps) and stamps[low][0] < start:
        low += 1
    high = low
    while high < len(stamps) and stamps[high][0] <= end:
        high += 1
    return stamps[max(0, low - 1) : high + 1]


def _shares(
    stage: str, start: int, end: int, stamps: list[tuple[int, Holder]], own_id: int
) -> list[Blame]:
    held: dict[Holder, int] = {}
    for (a, holder_a), (b, holder_b) in pairwise(stamps):
        if holder_a[0] != holder_b[0] or holder_a[0] == own_id:
            continue
        overlap = min(b, end) - max(a, start)
        if overlap > 0:
            held[holder_a] = held.get(holder_a, 0) + overlap
    ranked = sorted(held.items(), key=lambda item: -item[1])
    out = [Blame(stage, h[0], h[1], h[2], ns) for h, ns in ranked[:MAX_HOLDERS]]
    other = (end - start) - sum(entry.ns for entry in out)
    if other > 0:
        out.append(Blame(stage, 0, "", "", other))
    return out
