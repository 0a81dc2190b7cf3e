"""A bounded reorder window: records go in in arrival order and come out in time order.

Why: the kernel ring buffer and the server's hook channel are two streams that each arrive
in ~20 ms batches, and the kernel's per-CPU records interleave out of order by a few ms.
The correlator's state machine is simple only if it sees one stream in timestamp order.

How: items wait in a heap keyed by (timestamp, arrival number). The watermark is the
highest timestamp seen (from any item, or given by `advance`) minus the window; everything
at or below the watermark is released in order. The arrival number breaks ties, so the same
sequence of pushes always releases the same sequence (replays are exact). An item that
arrives with a timestamp already below the watermark is "late": it is released at once,
out of order, and counted. Memory is bounded: past `max_items` the oldest item is released
early (counted as forced) instead of growing without limit.

No clock: time moves only with the timestamps it is given.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
Entry = tuple[int, int, T]  # (timestamp, arrival number, item)
_NOTHING: tuple[()] = ()  # the empty result, shared


class ReorderBuffer(Generic[T]):
    """Releases items in timestamp order once the watermark has passed them."""

    __slots__ = ("_arrivals", "_heap", "_max_seen", "forced", "late", "max_items", "window_ns")

    def __init__(self, window_ns: int, max_items: int) -> None:
        if window_ns < 0 or max_items < 1:
            raise ValueError("window_ns must be >= 0 and max_items >= 1")
        self.window_ns = window_ns
        self.max_items = max_items
        self._heap: list[tuple[int, int, T]] = []
        self._arrivals = 0
        self._max_seen = 0
        self.late = 0  # items that arrived below the watermark
        self.forced = 0  # items released early because the buffer was full

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def watermark(self) -> int:
        """Every item with a timestamp at or below this has been (or is being) released."""
        return self._max_seen - self.window_ns

    @property
    def max_seen(self) -> int:
        return self._max_seen

    def push(self, ts: int, item: T) -> Sequence[Entry[T]]:
        """Add an item; return the entries it let out ((ts, arrival, item), in order)."""
        if ts > self._max_seen:
            self._max_seen = ts
        elif ts <= self._max_seen - self.window_ns:
            self.late += 1
        self._arrivals += 1
        heap = self._heap
        heapq.heappush(heap, (ts, self._arrivals, item))
        if heap[0][0] > self._max_seen - self.window_ns and len(heap) <= self.max_items:
            return _NOTHING  # the common case: nothing is old enough yet
        return self.release()

    def advance(self, now_ns: int) -> Sequence[Entry[T]]:
        """Move time forward without an item (a quiet stream still lets records out)."""
        if now_ns > self._max_seen:
            self._max_seen = now_ns
        return self.release()

    def release(self) -> Sequence[Entry[T]]:
        """Entries now below the watermark (plus the oldest ones beyond capacity), in order."""
        heap = self._heap
        if not heap:
            return _NOTHING
        watermark = self._max_seen - self.window_ns
        out: list[Entry[T]] = []
        pop = heapq.heappop
        while heap and heap[0][0] <= watermark:
            out.append(pop(heap))
        excess = len(heap) - self.max_items
        if excess > 0:
            self.forced += excess
            for _ in range(excess):
                out.append(pop(heap))
        return out

    def drain(self) -> list[Entry[T]]:
        """Every entry still held, in order (end of stream)."""
        out = sorted(self._heap)
        self._heap.clear()
        return out
