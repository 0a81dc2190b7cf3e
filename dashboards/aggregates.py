"""Streaming aggregates of every request the dashboard receives, O(1) work per request.

The list shows a bounded selection of requests; the figures here count all of them: the
request rate per second (the header's sparkline), and per stage and for the total a
log-linear histogram of durations (p50, p99, max in the aggregate view), since the start
and over a sliding window of recent seconds, plus the slowest requests of that window.
Nothing is re-sorted and no window of traces is kept: a batch of traces is turned into
numbers once (one pass over its stages) and added into numpy arrays.

Log-linear buckets (as in HdrHistogram): values below 32 ns have a bucket each; above, every
power of two is cut into 16 equal buckets, so a bucket's width is at most 1/16 of its value
and a percentile read from the histogram is within ~3% of the exact one (the bucket's middle
is reported, never more than the exact maximum).

Time is the traces' own clock (end_ns): a batch counts into the window slice of its newest
trace, so a slice boundary is blurred by at most one batch (1/8 s live).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter, sub

import numpy as np
import numpy.typing as npt

from tracer.model.trace import RequestTrace

SUB_BITS = 4  # 16 buckets per power of two
EXACT_BELOW = 1 << (SUB_BITS + 1)  # 32: values below have a bucket each
MAX_BITS = 44  # durations up to 2^44 ns (~4.9 hours); longer ones count in the last bucket
BUCKETS = ((MAX_BITS - SUB_BITS - 1) << SUB_BITS) + EXACT_BELOW
TOTAL = "total"
NS_PER_S = 1_000_000_000

Counts = npt.NDArray[np.int64]
_STAGES = itemgetter(13)  # RequestTrace.stages
_NAME = itemgetter(0)  # Stage.name
FOLD_EVERY = 8_192  # values: fold pending ones into the histograms (or when asked)


def bucket_of(value: int) -> int:
    """The bucket index of a duration in ns (the scalar form of `_buckets`)."""
    if value < EXACT_BELOW:
        return max(0, value)
    shift = value.bit_length() - SUB_BITS - 1
    return min(BUCKETS - 1, (shift << SUB_BITS) + (value >> shift))


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) of the durations that fall into bucket `index`."""
    if index < EXACT_BELOW:
        return index, index + 1
    shift = (index >> SUB_BITS) - 1
    mantissa = index - (shift << SUB_BITS)
    return mantissa << shift, (mantissa + 1) << shift


def _buckets(values: Counts) -> Counts:
    """`bucket_of` for an array of durations."""
    values = np.maximum(values, 0)
    bits = np.frexp(values.astype(np.float64))[1].astype(np.int64)  # == int.bit_length()
    shift = np.maximum(bits - SUB_BITS - 1, 0)
    index = np.where(values < EXACT_BELOW, values, (shift << SUB_BITS) + (values >> shift))
    return np.minimum(index, BUCKETS - 1)


def percentile_of(counts: Counts, fraction: float, exact_max: int) -> float:
    """Nearest-rank percentile read from one histogram row (0 when empty)."""
    total = int(counts.sum())
    if not total:
        return 0.0
    rank = max(1, min(total, int(np.ceil(fraction * total))))
    index = int(np.searchsorted(np.cumsum(counts), rank))
    low, high = bucket_bounds(index)
    return float(min(exact_max, (low + high - 1) / 2)) if high - low > 1 else float(low)


@dataclass
class StageStats:
    count: int  # traces (or, for a stage, sampled traces) that had it
    p50_ns: float
    p99_ns: float
    max_ns: float


@dataclass
class WindowStats:
    """What the aggregate view shows: per stage (and "total") over the window or all."""

    requests: int  # every request counted
    sampled: int  # requests whose stages were counted (== requests below the sample rate)
    stages: dict[str, StageStats]


class RateBudget:
    """How many of a batch to take so that at most `per_second` are taken a second (of the
    traces' own time): a token bucket holding at most one second's worth."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._tokens = per_second
        self._last_ns: int | None = None

    def take(self, count: int, newest_ns: int) -> int:
        if self._last_ns is not None:
            elapsed_s = max(0, newest_ns - self._last_ns) / NS_PER_S
            self._tokens = min(self.per_second, self._tokens + self.per_second * elapsed_s)
        self._last_ns = newest_ns if self._last_ns is None else max(self._last_ns, newest_ns)
        taken = min(count, int(self._tokens))
        self._tokens -= taken
        return taken


class _StageIds(dict[str, int]):
    """Stage name -> histogram row; a name not seen before gets the next row."""

    def __missing__(self, name: str) -> int:
        self[name] = row = len(self)
        return row


class _Slice:
    """One slice of the sliding window: its histograms, maxima and slowest traces."""

    __slots__ = ("counts", "maxima", "sampled", "second", "slowest")

    def __init__(self, second: int, rows: int) -> None:
        self.second = second
        self.counts: Counts = np.zeros((rows, BUCKETS), np.int64)
        self.maxima: Counts = np.zeros(rows, np.int64)
        self.sampled: Counts = np.zeros(rows, np.int64)
        self.slowest: list[tuple[int, int, RequestTrace]] = []  # (total, id, trace), a heap


class Aggregates:
    """Rates, per-stage histograms and the slowest requests, updated batch by batch."""

    def __init__(
        self,
        stage_names: Sequence[str],
        window_s: int = 60,
        slice_s: int = 5,
        keep_slowest: int = 10,
        rate_seconds: int = 600,
        stage_sample: int | None = 2_000,
    ) -> None:
        self.ids = _StageIds({name: row for row, name in enumerate(stage_names)})
        self.ids.setdefault(TOTAL, len(self.ids))
        self.window_s, self.slice_s = window_s, slice_s
        self.keep_slowest = keep_slowest
        self.stage_sample = stage_sample  # traces a second whose stages count (None: all)
        self._stage_budget = RateBudget(stage_sample) if stage_sample is not None else None
        self._random = random.Random(17)
        self.rate_seconds = rate_seconds
        self.count = 0
        self.counts: Counts = np.zeros((self._rows(), BUCKETS), np.int64)
        self.maxima: Counts = np.zeros(self._rows(), np.int64)
        self.sampled: Counts = np.zeros(self._rows(), np.int64)  # [total row]: traces sampled
        self._slices: list[_Slice] = []
        self._slowest: list[tuple[int, int, RequestTrace]] = []  # since the start, a heap
        self._pending_rows: list[int] = []  # histogram rows of values not folded in yet
        self._pending_durations: list[int] = []
        self._pending_sampled = 0
        self._pending_slice: _Slice | None = None
        self._per_second: dict[int, int] = {}
        self.newest_end_ns = 0

    def _rows(self) -> int:
        return max(32, len(self.ids) + 8)

    # -- updates -----------------------------------------------------------------------

    def add(self, traces: Sequence[RequestTrace], starts: list[int], ends: list[int]) -> None:
        """Count a batch of traces; `starts` and `ends` are their start_ns and end_ns.

        Every trace counts in the rate and the total's histogram. The stages of at most
        `stage_sample` traces a second (of the traces' own time; a random sample of a batch
        when there are more) count in the stage histograms: above that rate the stage
        figures are estimates from a sample, so the cost stays flat however fast requests
        arrive (the aggregate view says how many were sampled).
        """
        count = len(traces)
        if not count:
            return
        totals = list(map(sub, ends, starts))
        newest = max(ends)
        sample: Sequence[RequestTrace] = traces
        if self._stage_budget is not None:
            take = self._stage_budget.take(count, newest)
            if take < count:
                sample = [traces[i] for i in sorted(self._random.sample(range(count), take))]
        ids = self.ids
        stages = list(chain.from_iterable(map(_STAGES, sample)))
        total_row = ids[TOTAL]
        current = self._slice_for(newest)
        if current is not self._pending_slice:
            self._fold()
            self._pending_slice = current
        # Numbers only (no traces kept): folded into the histograms in bulk (`_fold`).
        self._pending_rows += [total_row] * count
        self._pending_rows += map(ids.__getitem__, map(_NAME, stages))
        self._pending_durations += totals
        self._pending_durations += [stage[3] - stage[2] for stage in stages]
        self._pending_sampled += len(sample)
        if len(self._pending_rows) >= FOLD_EVERY:
            self._fold()
        self.count += count
        self.newest_end_ns = max(self.newest_end_ns, newest)
        self._count_seconds(ends)
        self._keep_slowest(current.slowest, traces, totals)
        self._keep_slowest(self._slowest, traces, totals)

    def _fold(self) -> None:
        """Add the pending (row, duration) pairs into the histograms: a few array operations
        for thousands of values, so small batches cost no numpy calls of their own."""
        if not self._pending_rows:
            return
        if len(self.ids) > self.counts.shape[0]:
            self._grow()
        row_array = np.array(self._pending_rows, np.int64)
        duration_array = np.array(self._pending_durations, np.int64)
        flat = row_array * BUCKETS + _buckets(duration_array)
        added = np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        maxima = np.zeros_like(self.maxima)
        np.maximum.at(maxima, row_array, duration_array)
        targets: list[Aggregates | _Slice] = [self]
        if self._pending_slice is not None:
            targets.append(self._pending_slice)
        for target in targets:  # everything since the start, and the window's slice
            target.counts += added
            np.maximum(target.maxima, maxima, out=target.maxima)
            target.sampled[self.ids[TOTAL]] += self._pending_sampled
        self._pending_rows, self._pending_durations = [], []
        self._pending_sampled = 0

    def _grow(self) -> None:
        rows = self._rows()

        def grown(array: Counts) -> Counts:
            pad = [(0, rows - array.shape[0])] + [(0, 0)] * (array.ndim - 1)
            return np.pad(array, pad)

        self.counts, self.maxima = grown(self.counts), grown(self.maxima)
        self.sampled = grown(self.sampled)
        for piece in self._slices:
            piece.counts, piece.maxima = grown(piece.counts), grown(piece.maxima)
            piece.sampled = grown(piece.sampled)

    def _count_seconds(self, ends: list[int]) -> None:
        per_second = self._per_second
        first, last = min(ends) // NS_PER_S, max(ends) // NS_PER_S
        if first == last:  # the usual batch: all in one second
            per_second[first] = per_second.get(first, 0) + len(ends)
        else:
            for end in ends:
                second = end // NS_PER_S
                per_second[second] = per_second.get(second, 0) + 1
        if len(per_second) > 2 * self.rate_seconds:
            newest = max(per_second)
            for second in [s for s in per_second if s <= newest - self.rate_seconds]:
                del per_second[second]

    def _slice_for(self, end_ns: int) -> _Slice:
        second = end_ns // NS_PER_S // self.slice_s * self.slice_s
        slices = self._slices
        if slices and slices[-1].second >= second:
            for piece in reversed(slices):  # a late batch: its slice, or the oldest kept
                if piece.second <= second:
                    return piece
            return slices[0]
        slices.append(_Slice(second, self.counts.shape[0]))
        oldest = second - self.window_s + self.slice_s
        while slices[0].second < oldest:
            slices.pop(0)
        return slices[-1]

    def _keep_slowest(
        self,
        heap: list[tuple[int, int, RequestTrace]],
        traces: Sequence[RequestTrace],
        totals: list[int],
    ) -> None:
        keep = self.keep_slowest
        for index in heapq.nlargest(keep, range(len(totals)), key=totals.__getitem__):
            trace = traces[index]
            entry = (totals[index], trace.id, trace)
            if len(heap) < keep:
                heapq.heappush(heap, entry)
            elif entry[:2] > heap[0][:2]:
                heapq.heapreplace(heap, entry)

    # -- questions ---------------------------------------------------------------------

    def rate_history(self, seconds: int, now_ns: int | None = None) -> list[float]:
        """Completed requests per second for the last `seconds` seconds (oldest first)."""
        last = (self.newest_end_ns if now_ns is None else now_ns) // NS_PER_S
        get = self._per_second.get
        return [float(get(s, 0)) for s in range(last - seconds + 1, last + 1)]

    def stage_stats(self, window: bool = True) -> WindowStats:
        """Per-stage count, p50, p99 and max (and "total"): the recent window or everything."""
        self._fold()
        if window and self._slices:
            counts = sum((piece.counts for piece in self._slices), np.zeros_like(self.counts))
            maxima = np.max([piece.maxima for piece in self._slices], axis=0)
            sampled = sum((piece.sampled for piece in self._slices), np.zeros_like(self.sampled))
        else:
            counts, maxima, sampled = self.counts, self.maxima, self.sampled
        stats = {}
        for name, row in self.ids.items():
            if row >= counts.shape[0]:
                continue
            histogram = counts[row]
            total = int(histogram.sum())
            if not total:
                continue
            top = int(maxima[row])
            stats[name] = StageStats(
                total,
                percentile_of(histogram, 0.5, top),
                percentile_of(histogram, 0.99, top),
                float(top),
            )
        total_row = self.ids[TOTAL]
        requests = stats[TOTAL].count if TOTAL in stats else 0
        return WindowStats(requests, int(sampled[total_row]), stats)

    def window_count(self) -> int:
        """Requests counted in the recent window."""
        self._fold()
        row = self.ids[TOTAL]
        return int(sum(int(piece.counts[row].sum()) for piece in self._slices))

    def slowest(self, count: int = 10, window: bool = True) -> list[RequestTrace]:
        """The slowest requests of the recent window (or since the start), slowest first."""
        if window:
            entries = [entry for piece in self._slices for entry in piece.slowest]
        else:
            entries = list(self._slowest)
        return [trace for *_, trace in heapq.nlargest(count, entries, key=lambda e: e[:2])]
