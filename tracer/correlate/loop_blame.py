"""Who held the event loop while a request waited for it.

A request waits for its event loop in the loop-wait stages of the registry (loop_busy,
loop_queue, handoff). The loop runs one callback at a time, so whatever ran during that
wait is to blame, and the server's timing hooks say when each request's code ran: every
stamp of a RequestTiming (headers parsed, app called, response started, each write, app
returned, ...) is a moment the loop was running that request.

Rule: between two consecutive stamps (in time, over every request of the loop's thread)
that belong to the SAME request, the loop was running that request's code: nothing else
left a stamp in between, and had the loop been idle the waiting request would not have
waited. Between stamps of two different requests the holder is unknown ("other work":
callbacks without hooks, garbage collection, background tasks, or a request that had not
finished, so was not known yet, when the waiting one was emitted). A request never holds
the loop against itself: its own stretches are loop overhead, counted as other work.

Cost: only waits of at least `min_wait_ns` are examined (shorter ones are one loop
iteration), stamps live in 1 ms buckets per thread, and old buckets are dropped, so the
work per blamed request is proportional to the stamps around its wait, and memory to the
recent past.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from itertools import pairwise

from tracer.model.trace import Blame, Stage
from tracer.records.hooks import RequestTiming

BUCKET_NS = 1_000_000
HORIZON_NS = 5_000_000_000  # how far back a holder's stamps are kept
MAX_LOOKBACK_BUCKETS = 2_000  # how far back (and ahead) a wait's bracketing stamps are searched
MIN_WAIT_NS = 200_000
MAX_HOLDERS = 3  # holders named per wait; the rest joins "other work"

Holder = tuple[int, str, str]  # trace id, method, path
ThreadKey = tuple[int, int]  # pid, tid


def stamps_of(timing: RequestTiming) -> list[int]:
    """Every moment the loop was running this request's code (sorted, no zeros)."""
    found = [
        timing.first_byte_ns,
        timing.headers_done_ns,
        timing.body_done_ns,
        timing.app_called_ns,
        timing.response_start_ns,
        timing.app_returned_ns,
        timing.response_done_ns,
    ]
    found += [ts for ts, _ in timing.chunks]
    return sorted(ts for ts in found if ts)


class _ThreadStamps:
    __slots__ = ("buckets", "order")

    def __init__(self) -> None:
        self.buckets: dict[int, list[tuple[int, Holder]]] = defaultdict(list)
        self.order: deque[int] = deque()  # bucket numbers in the order they were created

    def add(self, stamps: list[int], holder: Holder) -> None:
        buckets = self.buckets
        for ts in stamps:
            number = ts // BUCKET_NS
            bucket = buckets.get(number)
            if bucket is None:
                bucket = buckets[number] = []
                self.order.append(number)
            bucket.append((ts, holder))

    def forget_before(self, ts: int) -> None:
        limit = ts // BUCKET_NS
        order, buckets = self.order, self.buckets
        while order and (order[0] < limit or len(order) > 2 * HORIZON_NS // BUCKET_NS):
            buckets.pop(order.popleft(), None)

    def around(self, start: int, end: int) -> list[tuple[int, Holder]]:
        """The stamps in [start, end], plus the last one before and the first one after."""
        buckets = self.buckets
        first, last = start // BUCKET_NS, end // BUCKET_NS
        inside = [
            s for n in range(first, last + 1) for s in buckets.get(n, ()) if start <= s[0] <= end
        ]
        before = self._nearest(first, lambda ts: ts < start, -1)
        after = self._nearest(last, lambda ts: ts > end, 1)
        out = sorted(inside)
        if before is not None:
            out.insert(0, before)
        if after is not None:
            out.append(after)
        return out

    def _nearest(
        self, number: int, fits: Callable[[int], bool], step: int
    ) -> tuple[int, Holder] | None:
        buckets = self.buckets
        for _ in range(MAX_LOOKBACK_BUCKETS):
            bucket = buckets.get(number)
            if bucket:
                chosen = [s for s in bucket if fits(s[0])]
                if chosen:
                    return max(chosen) if step < 0 else min(chosen)
            number += step
        return None


class LoopHistory:
    """Recent requests' hook stamps per event-loop thread, and the blame they imply."""

    def __init__(self, min_wait_ns: int = MIN_WAIT_NS) -> None:
        self.min_wait_ns = min_wait_ns
        self._threads: dict[ThreadKey, _ThreadStamps] = {}
        self._latest = 0

    def add(self, trace_id: int, timing: RequestTiming) -> None:
        """Remember when this request's code ran on its loop."""
        stamps = stamps_of(timing)
        if not stamps:
            return
        key = (timing.pid, timing.tid)
        thread = self._threads.get(key)
        if thread is None:
            thread = self._threads[key] = _ThreadStamps()
        thread.add(stamps, (trace_id, timing.method, timing.path))
        if stamps[-1] > self._latest + BUCKET_NS * 100:
            self._latest = stamps[-1]
            for other in self._threads.values():
                other.forget_before(self._latest - HORIZON_NS)

    def blame(
        self, trace_id: int, timing: RequestTiming, stages: tuple[Stage, ...], waits: frozenset[str]
    ) -> tuple[Blame, ...]:
        """Who held the loop during each loop-wait stage of a request (call before `add`)."""
        thread = self._threads.get((timing.pid, timing.tid))
        out: list[Blame] = []
        own = stamps_of(timing)
        for stage in stages:
            if stage.name not in waits or stage.end_ns - stage.start_ns < self.min_wait_ns:
                continue
            start, end = stage.start_ns, stage.end_ns
            stamps = thread.around(start, end) if thread is not None else []
            me: Holder = (trace_id, timing.method, timing.path)
            stamps += [(ts, me) for ts in own if start <= ts <= end]
            out += _shares(stage.name, start, end, sorted(stamps), trace_id)
        return tuple(out)


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
