"""A bounded reorder window: records go in in arrival order and come out in time order.

Why: the kernel ring buffer and the server's hook channel are two streams that each arrive
in ~20 ms batches, and the kernel's per-CPU records interleave out of order by a few ms.
The correlator's state machine is simple only if it sees one stream in timestamp order.

How: items wait ordered by (timestamp, arrival number). The watermark is the highest
timestamp seen (from any item, or given by `advance`) minus the window; everything at or
below the watermark is released in order. The arrival number breaks ties, so the same
sequence of pushes always releases the same sequence (replays are exact). An item that
arrives with a timestamp already below the watermark is "late": it is released at once,
out of order, and counted. Memory is bounded: past `max_items` the oldest item is released
early (counted as forced) instead of growing without limit.

Layout (this runs for every record, so it is built for how records arrive): items wait in
two lists. New items are appended to `fresh`, in arrival order, and only the oldest
timestamp among them is tracked. Released items leave from the front of `sorted`, by
moving a head index past them (the released prefix is cut off in bulk). When an item in
`fresh` comes due (or the buffer is full, or the stream ends), all of `fresh` is sorted
and merged into `sorted`: the streams are nearly in order, so Python's sort merges their
runs in about linear time, and this happens about once per window rather than per item.
A few old items merged into a long stretch of `sorted` are inserted one by one instead
(bisection), so a stream lagging behind costs about what a heap would. Either way the
order out is exactly that of a single heap of (timestamp, arrival number).

No clock: time moves only with the timestamps it is given.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
Entry = tuple[int, int, T]  # (timestamp, arrival number, item)
_NOTHING: tuple[()] = ()  # the empty result, shared

MIN_COMPACTION = 1024  # released entries cut off the front of `sorted` in one go, at least
INSERT_RATIO = 8  # merge by insertion when the overlapped stretch is this many times longer

NEVER = 1 << 63  # later than any CLOCK_MONOTONIC timestamp (an int, unlike math.inf)


class ReorderBuffer(Generic[T]):
    """Releases items in timestamp order once the watermark has passed them."""

    __slots__ = (
        "_arrivals",
        "_fresh",
        "_fresh_min",
        "_head",
        "_max_seen",
        "_next",
        "_room",
        "_sorted",
        "forced",
        "late",
        "max_items",
        "window_ns",
    )

    def __init__(self, window_ns: int, max_items: int) -> None:
        if window_ns < 0 or max_items < 1:
            raise ValueError("window_ns must be >= 0 and max_items >= 1")
        self.window_ns = window_ns
        self.max_items = max_items
        self._sorted: list[Entry[T]] = []  # in order; [:_head] already released
        self._head = 0
        self._next: int = NEVER  # timestamp of the next entry of `sorted` (NEVER: none)
        self._fresh: list[Entry[T]] = []  # pushed since the last merge, in arrival order
        self._fresh_min: int = NEVER  # their oldest timestamp (NEVER: none)
        self._room = max_items  # how many `fresh` may hold before the buffer is full
        self._arrivals = 0
        self._max_seen = 0
        self.late = 0  # items that arrived below the watermark
        self.forced = 0  # items released early because the buffer was full

    def __len__(self) -> int:
        return len(self._sorted) - self._head + len(self._fresh)

    @property
    def watermark(self) -> int:
        """Every item with a timestamp at or below this has been (or is being) released."""
        return self._max_seen - self.window_ns

    @property
    def max_seen(self) -> int:
        return self._max_seen

    def push(self, ts: int, item: T) -> Sequence[Entry[T]]:
        """Add an item; return the entries it let out ((ts, arrival, item), in order)."""
        max_seen = self._max_seen
        self._arrivals += 1
        if ts > max_seen:
            self._max_seen = max_seen = ts
        elif ts <= max_seen - self.window_ns:
            self.late += 1
            # Due at once, and alone: everything held is above the watermark (each call
            # releases what the watermark passed), so it is all this push lets out.
            return [(ts, self._arrivals, item)]
        fresh = self._fresh
        fresh.append((ts, self._arrivals, item))
        if ts < self._fresh_min:
            self._fresh_min = ts
        watermark = max_seen - self.window_ns
        if self._next > watermark and self._fresh_min > watermark and len(fresh) <= self._room:
            return _NOTHING  # nothing is old enough yet
        return self.release()

    def advance(self, now_ns: int) -> Sequence[Entry[T]]:
        """Move time forward without an item (a quiet stream still lets records out)."""
        if now_ns > self._max_seen:
            self._max_seen = now_ns
        return self.release()

    def release(self) -> Sequence[Entry[T]]:
        """Entries now below the watermark (plus the oldest ones beyond capacity), in order."""
        watermark = self._max_seen - self.window_ns
        fresh = self._fresh
        if fresh and (self._fresh_min <= watermark or len(fresh) > self._room):
            self._merge()  # (then `fresh` is empty)
        entries = self._sorted
        head = cut = self._head
        size = len(entries)
        while cut < size and entries[cut][0] <= watermark:
            cut += 1
        excess = size - cut + len(self._fresh) - self.max_items
        if excess > 0:  # only after a merge: the oldest are all in `sorted`
            self.forced += excess
            cut += excess
        out = entries[head:cut]
        if cut >= MIN_COMPACTION:
            del entries[:cut]
            size -= cut
            cut = 0
        self._head = cut
        self._next = entries[cut][0] if cut < size else NEVER
        self._room = self.max_items - (size - cut)
        return out

    def drain(self) -> list[Entry[T]]:
        """Every entry still held, in order (end of stream)."""
        if self._fresh:
            self._merge()
        out = self._sorted[self._head :]
        self._sorted.clear()
        self._head = 0
        self._next = NEVER
        self._room = self.max_items
        return out

    def _merge(self) -> None:
        """Move every item of `fresh` into `sorted` (see the module docstring)."""
        batch = self._fresh
        self._fresh = []
        self._fresh_min = NEVER
        batch.sort()  # arrival numbers never tie: items themselves are never compared
        entries, head = self._sorted, self._head
        if head < len(entries) and batch[0] < entries[-1]:
            at = bisect_right(entries, batch[0], head)
            if len(entries) - at > INSERT_RATIO * len(batch):
                for entry in batch:
                    insort(entries, entry, at)
                return
            batch = entries[at:] + batch
            del entries[at:]
            batch.sort()  # two sorted runs: one linear merge
        entries += batch
