"""The dashboard's model: what arrived, what is listed, and the figures over everything.

No Textual here (tested directly). A live run's pipeline thread adds each batch it emits
(dashboards/feed.py, under `lock`); a recording is added at once. A batch goes three ways:

- into the streaming aggregates (dashboards/aggregates.py): rates, per-stage histograms and
  the slowest requests, over every request;
- into `held`, a bounded ring of the most recent traces (what a new filter is applied to);
  above `held_per_second` an even sample of each batch is held, so that holding (and
  freeing what leaves the ring) costs no more at 20,000 req/s than at 2,000;
- through the filter into the *list*, a bounded ring of rows in time order. When more
  requests of one interval (1/8 s of completion time) pass the filter than a person can read,
  the list keeps the slowest, the failed and the newest of them and one `Gap` row that says
  how many more it does not list: the list stays useful (the slow ones are all there, sorted
  by total they are at the top) and its size is bounded whatever the request rate.

The UI reads under `lock` a few times a second: the view (the list's rows in the chosen
order, a new list it may keep) is recomputed only when rows arrived or the sort changed;
time order is kept as rows arrive (late, slow requests are inserted where they started),
other orders are a sort of at most `list_capacity` rows.

Filter syntax (space-separated terms, all must match):
    text          substring of the method, path, status or dominant stage
    status:5      status code starts with 5
    stage:app     dominant stage is app
    >10ms         total at least 10 ms (units ns, us/µs, ms, s)
    <500us        total below 500 µs
    incomplete    traces marked incomplete
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter, sub
from typing import Any

from dashboards.aggregates import Aggregates, RateBudget, WindowStats
from tracer.model.stages import STAGE_NAMES
from tracer.model.trace import RequestTrace

UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"^([<>])(\d+(?:\.\d+)?)(ns|us|µs|ms|s)$")

_START, _END = itemgetter(10), itemgetter(11)  # RequestTrace.start_ns, .end_ns
# (t[7] is RequestTrace.status and t[12] .complete, read by index in the thinning loop)

INTERVAL_NS = 125_000_000  # the list's thinning interval, by completion time
KEEP_SLOWEST = 3  # per interval, when more arrive than the list shows
KEEP_FAILED = 2  # 5xx, no response, incomplete
KEEP_NEWEST = 5
LIVE_HELD = 10_000
LIVE_LIST = 5_000


def _dominant_name(trace: RequestTrace) -> str:
    stage = trace.dominant_stage()
    return stage.name if stage else ""


@dataclass(eq=False)
class Gap:
    """Requests of one interval that passed the filter but are not listed."""

    id: int  # negative, unique (rows are keyed by id)
    hidden: int
    received: int  # in the interval, listed ones included
    first_start_ns: int  # earliest start among the hidden ones
    last_start_ns: int  # latest start among the hidden ones
    interval_ns: int = INTERVAL_NS
    sampled: bool = False  # counted in a sample of the interval (a list rebuilt by a filter)

    @property
    def start_ns(self) -> int:
        return self.last_start_ns


Row = RequestTrace | Gap


def _time_key(row: Row) -> tuple[int, int]:
    # A gap sorts after the hidden requests it stands for (its start is the latest of them).
    return (row.start_ns, row.id if isinstance(row, RequestTrace) else 1 << 62)


SORT_KEYS: dict[str, Callable[[RequestTrace], Any]] = {
    "time": lambda t: (t.start_ns, t.id),
    "total": lambda t: t.total_ns,
    "path": lambda t: (t.path, t.start_ns),
    "status": lambda t: (t.status, t.start_ns),
    "dominant": lambda t: d.duration_ns if (d := t.dominant_stage()) else 0,
}
SORT_NAMES = {
    "time": "time",
    "total": "total",
    "path": "path",
    "status": "status",
    "dominant": "dominant stage",
}


class FilterError(ValueError):
    pass


Predicate = Callable[[RequestTrace], bool]


def compile_filter(text: str) -> Predicate:
    """A predicate for the filter syntax above; raises FilterError for a malformed term."""
    tests = [_term_test(term) for term in text.split()]
    return lambda trace: all(test(trace) for test in tests)


def _term_test(term: str) -> Predicate:
    lowered = term.lower()
    if lowered.startswith("status:"):
        prefix = lowered[7:]
        return lambda t: str(t.status).startswith(prefix)
    if lowered.startswith("stage:"):
        name = lowered[6:]
        if name not in STAGE_NAMES:
            raise FilterError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
        return lambda t: _dominant_name(t) == name
    if lowered == "incomplete":
        return lambda t: not t.complete
    if term[:1] in "<>":
        match = _DURATION.match(term)
        if not match:
            raise FilterError(f"bad duration term {term!r}; try >10ms or <500us")
        limit = float(match.group(2)) * UNITS_NS[match.group(3)]
        if match.group(1) == ">":
            return lambda t: t.total_ns >= limit
        return lambda t: t.total_ns < limit
    return lambda t: (
        lowered in t.path.lower()
        or lowered == t.method.lower()
        or str(t.status).startswith(lowered)
        or lowered == _dominant_name(t)
    )


BUDGET = KEEP_SLOWEST + KEEP_FAILED + KEEP_NEWEST


class _OpenInterval:
    """One interval of the list while its requests arrive: all of them while they are few,
    then only the candidates to list and counts (O(1) per request, a few heap pushes per
    batch)."""

    __slots__ = (
        "count", "failed", "first_start", "interval", "newest", "sampled", "slowest", "small"
    )  # fmt: skip

    def __init__(self, interval: int, sampled: bool) -> None:
        self.interval = interval
        self.sampled = sampled
        self.count = 0
        self.first_start = 1 << 62
        self.failed: list[RequestTrace] = []  # the first KEEP_FAILED
        self.slowest: list[tuple[int, int, RequestTrace]] = []  # (total, id, trace), a heap
        self.newest: list[tuple[int, int, RequestTrace]] = []  # (start, id, trace), a heap
        self.small: list[RequestTrace] | None = []  # all of them, while they are few

    def add(self, traces: Sequence[RequestTrace], starts: list[int], totals: list[int]) -> None:
        count = len(traces)
        self.count += count
        if self.small is not None:
            self.small.extend(traces)
            if self.count > BUDGET:
                self.small = None
        self.first_start = min(self.first_start, min(starts))
        # The batch's own candidates first (nlargest), then into the interval's heaps.
        for heap, values, keep in (
            (self.slowest, totals, KEEP_SLOWEST),
            (self.newest, starts, KEEP_NEWEST + 1),  # +1: the latest start not listed
        ):
            top = heapq.nlargest(keep, range(count), key=values.__getitem__)
            for index in top:
                trace = traces[index]
                entry = (values[index], trace[0], trace)
                if len(heap) < keep:
                    heapq.heappush(heap, entry)
                elif entry[:2] > heap[0][:2]:
                    heapq.heapreplace(heap, entry)
        if len(self.failed) < KEEP_FAILED:
            for trace in traces:
                if trace[7] >= 500 or not trace[7] or not trace[12]:  # status, complete
                    self.failed.append(trace)
                    if len(self.failed) == KEEP_FAILED:
                        break

    def rows(self, gap_ids: Iterator[int]) -> tuple[list[RequestTrace], Gap | None]:
        """The requests to list, and the gap for the rest (None when all are listed)."""
        if self.small is not None:
            return self.small, None
        newest = sorted(self.newest, reverse=True)
        kept = {t[0]: t for *_, t in self.slowest}
        kept.update((t[0], t) for t in self.failed)
        kept.update((t[0], t) for *_, t in newest[:KEEP_NEWEST])
        hidden_starts = [start for start, id_, _ in newest if id_ not in kept]
        last_start = hidden_starts[0] if hidden_starts else min(s for s, *_ in newest) - 1
        gap = Gap(
            id=next(gap_ids),
            hidden=self.count - len(kept),
            received=self.count,
            first_start_ns=min(self.first_start, last_start),
            last_start_ns=last_start,
            sampled=self.sampled,
        )
        return list(kept.values()), gap


@dataclass
class TraceStore:
    """`held_capacity`/`list_capacity` None: unbounded (a recording, already in memory)."""

    held_capacity: int | None = LIVE_HELD
    list_capacity: int | None = LIVE_LIST
    thin: bool = True  # keep the slowest/failed/newest per interval when more arrive
    stage_sample: int | None = 2_000  # traces a second whose stages the aggregates count
    held_per_second: int | None = 2_000  # traces a second held (an even sample beyond)
    held_sampled: bool = False  # some batches were sampled into `held`
    held: deque[RequestTrace] = field(init=False)
    total_seen: int = 0
    matched: int = 0  # of total_seen, passed the filter (since it was set)
    not_listed: int = 0  # of matched, left out of the list (in gaps)
    filter_text: str = ""
    sort_key: str = "time"
    reverse: bool = False
    version: int = 0  # changes whenever the view may have changed
    aggregates: Aggregates = field(init=False)
    _rows: list[Row] = field(default_factory=list, init=False)
    _keys: list[tuple[int, int]] = field(default_factory=list, init=False)
    _view: list[Row] | None = field(default=None, init=False)
    _predicate: Predicate | None = field(default=None, init=False)
    _gap_ids: Iterator[int] = field(default_factory=lambda: itertools.count(-1, -1), init=False)
    _open: dict[int, _OpenInterval] = field(default_factory=dict, init=False)
    last_thinned_ns: int = 0  # completion time of the newest interval that had a gap

    lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.held = deque(maxlen=self.held_capacity)
        self.aggregates = Aggregates(STAGE_NAMES, stage_sample=self.stage_sample)
        self._held_budget = (
            RateBudget(self.held_per_second) if self.held_per_second is not None else None
        )

    @classmethod
    def for_recording(cls) -> TraceStore:
        """Everything held and listed, exact figures: a recording is in memory already."""
        return cls(
            held_capacity=None,
            list_capacity=None,
            thin=False,
            stage_sample=None,
            held_per_second=None,
        )

    # -- changes -----------------------------------------------------------------------

    def add(self, traces: Sequence[RequestTrace]) -> int:
        """Take a batch: count it, hold it, list what passes the filter."""
        count = len(traces)
        if not count:
            return 0
        starts = list(map(_START, traces))
        ends = list(map(_END, traces))
        self.aggregates.add(traces, starts, ends)
        if self._held_budget is None:
            self.held.extend(traces)
        else:  # a busy server: hold an even sample (what is not held is freed by the caller)
            take = self._held_budget.take(count, max(ends))
            if take >= count:
                self.held.extend(traces)
            else:
                self.held_sampled = True
                if take:
                    self.held.extend(traces[:: -(-count // take)])
        self.total_seen += count
        if self._predicate is None:
            self._admit(traces, starts, ends)
        else:
            picked = [i for i, trace in enumerate(traces) if self._predicate(trace)]
            if picked:
                self._admit(
                    [traces[i] for i in picked],
                    [starts[i] for i in picked],
                    [ends[i] for i in picked],
                )
        return count

    def _admit(
        self,
        traces: Sequence[RequestTrace],
        starts: list[int],
        ends: list[int],
        sampled: bool = False,
    ) -> None:
        """List a filtered batch: per interval, everything or a thinned selection + a gap.

        Live batches are small (one every ~20 ms) and an interval spans many: each interval
        keeps only its candidates (the slowest, the first failed, the newest) and a count
        while it is open, and is listed when a batch two intervals later arrives (or when
        `close_intervals` is called). The traces it does not keep are not referenced here.
        """
        self.matched += len(traces)
        if not self.thin:
            self._insert(list(traces))
            return
        first, last = min(ends) // INTERVAL_NS, max(ends) // INTERVAL_NS
        totals = list(map(sub, ends, starts))
        if first == last:
            self._interval(first, sampled).add(traces, starts, totals)
        else:
            by_interval: dict[int, list[int]] = {}
            for index, end in enumerate(ends):
                by_interval.setdefault(end // INTERVAL_NS, []).append(index)
            for interval, indexes in sorted(by_interval.items()):
                self._interval(interval, sampled).add(
                    [traces[i] for i in indexes],
                    [starts[i] for i in indexes],
                    [totals[i] for i in indexes],
                )
        closing = [i for i in self._open if i < last - 1]
        if closing:
            self._close(closing)

    def _interval(self, interval: int, sampled: bool) -> _OpenInterval:
        state = self._open.get(interval)
        if state is None:
            state = self._open[interval] = _OpenInterval(interval, sampled)
        return state

    def close_intervals(self) -> None:
        """List every open interval now (the server went quiet, or a list is rebuilt)."""
        if self._open:
            self._close(list(self._open))

    def _close(self, intervals: list[int]) -> None:
        rows: list[Row] = []
        for interval in sorted(intervals):
            state = self._open.pop(interval)
            kept, gap = state.rows(self._gap_ids)
            rows += kept
            if gap is not None:
                rows.append(gap)
                self.not_listed += gap.hidden
                self.last_thinned_ns = max(self.last_thinned_ns, (interval + 1) * INTERVAL_NS)
        self._insert(rows)

    def _insert(self, rows: list[Row]) -> None:
        """Insert rows in time order; drop the oldest beyond the list's capacity."""
        if not rows:
            return
        rows.sort(key=_time_key)
        keys = [_time_key(row) for row in rows]
        if not self._keys or keys[0] >= self._keys[-1]:
            self._rows += rows
            self._keys += keys
        else:
            for row, key in zip(rows, keys, strict=True):
                at = bisect.bisect_right(self._keys, key)
                self._rows.insert(at, row)
                self._keys.insert(at, key)
        capacity = self.list_capacity
        if capacity is not None and len(self._rows) > capacity:
            del self._rows[: len(self._rows) - capacity]
            del self._keys[: len(self._keys) - capacity]
        self._changed()

    def _changed(self) -> None:
        self._view = None
        self.version += 1

    def set_filter(self, text: str) -> None:
        """List what matches `text` among the held traces (and from now on)."""
        predicate = compile_filter(text) if text.strip() else None  # raises first
        self.filter_text = text.strip()
        self._predicate = predicate
        self._rows, self._keys = [], []
        self._open = {}
        self.matched = self.not_listed = 0
        held = list(self.held)
        if predicate is not None:
            held = [t for t in held if predicate(t)]
        if held:
            held.sort(key=lambda t: t.end_ns)  # completion order, as they arrived
            starts = list(map(_START, held))
            ends = list(map(_END, held))
            self._admit(held, starts, ends, sampled=self.held_sampled)
            self.close_intervals()
        self._changed()

    def set_sort(self, key: str, reverse: bool | None = None) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}")
        if reverse is None:
            reverse = not self.reverse if key == self.sort_key else key != "time"
        self.sort_key, self.reverse = key, reverse
        self._changed()

    # -- questions ---------------------------------------------------------------------

    @property
    def rows(self) -> list[Row]:
        """The list's rows in time order (gaps included)."""
        return self._rows

    @property
    def time_order(self) -> bool:
        return self.sort_key == "time"

    def view(self) -> list[Row]:
        """The rows to show in the chosen order (a new list when anything changed).

        Gap rows belong to time order; other orders list requests only.
        """
        if self._view is None:
            if self.sort_key == "time":
                view = self._rows[::-1] if self.reverse else list(self._rows)
            else:
                key = SORT_KEYS[self.sort_key]
                traces = [row for row in self._rows if isinstance(row, RequestTrace)]
                traces.sort(key=key, reverse=self.reverse)
                view = list[Row](traces)
            self._view = view
        return self._view

    def listed(self) -> list[RequestTrace]:
        """The requests the list shows (they passed the filter), in time order: ctrl+s."""
        return [row for row in self._rows if isinstance(row, RequestTrace)]

    def thinning_since(self, now_end_ns: int, within_ns: int = 2_000_000_000) -> bool:
        """Whether the list left requests out recently (the header says so)."""
        return bool(self.last_thinned_ns) and now_end_ns - self.last_thinned_ns <= within_ns

    def rate_history(self, seconds: int, now_ns: int | None = None) -> list[float]:
        """Completed requests per second for the last `seconds` seconds (oldest first)."""
        return self.aggregates.rate_history(seconds, now_ns)

    def stage_stats(self, window: bool = True) -> WindowStats:
        return self.aggregates.stage_stats(window)

    def slowest(self, count: int = 10, window: bool = True) -> list[RequestTrace]:
        return self.aggregates.slowest(count, window)
