"""The dashboard's model: a bounded window of request traces, filtered and sorted on demand.

No Textual here (tested directly). The UI adds batches of traces a few times a second and
asks for the current view; the view is recomputed only when traces arrived or the filter or
sort changed, so rendering a frame never sorts.

Filter syntax (space-separated terms, all must match):
    text          substring of the method, path, status or dominant stage
    status:5      status code starts with 5
    stage:app     dominant stage is app
    >10ms         total at least 10 ms (units ns, us/µs, ms, s)
    <500us        total below 500 µs
    incomplete    traces marked incomplete
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dashboards.render import percentile
from tracer.model.stages import STAGE_NAMES
from tracer.model.trace import RequestTrace

UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"^([<>])(\d+(?:\.\d+)?)(ns|us|µs|ms|s)$")


def _dominant_name(trace: RequestTrace) -> str:
    stage = trace.dominant_stage()
    return stage.name if stage else ""


SORT_KEYS: dict[str, Callable[[RequestTrace], object]] = {
    "time": lambda t: (t.start_ns, t.id),
    "total": lambda t: t.total_ns,
    "path": lambda t: (t.path, t.start_ns),
    "status": lambda t: (t.status, t.start_ns),
    "dominant": lambda t: d.duration_ns if (d := t.dominant_stage()) else 0,
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


@dataclass
class StageStats:
    count: int
    p50_ns: float
    p99_ns: float
    max_ns: float


@dataclass
class TraceStore:
    capacity: int = 20_000
    traces: deque[RequestTrace] = field(init=False)
    total_seen: int = 0
    evicted: int = 0
    filter_text: str = ""
    sort_key: str = "time"
    reverse: bool = False
    _view: list[RequestTrace] | None = field(default=None, init=False)
    _predicate: Callable[[RequestTrace], bool] = field(init=False)
    _per_second: dict[int, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.traces = deque(maxlen=self.capacity)
        self._predicate = compile_filter("")

    # -- changes -----------------------------------------------------------------------

    def add(self, traces: Iterable[RequestTrace]) -> int:
        added = 0
        for trace in traces:
            if len(self.traces) == self.capacity:
                self.evicted += 1
            self.traces.append(trace)
            second = trace.end_ns // 1_000_000_000
            self._per_second[second] = self._per_second.get(second, 0) + 1
            added += 1
        if added:
            self.total_seen += added
            self._view = None
            if len(self._per_second) > 600:
                for second in sorted(self._per_second)[:-600]:
                    del self._per_second[second]
        return added

    def set_filter(self, text: str) -> None:
        self._predicate = compile_filter(text)  # raises before changing anything
        self.filter_text = text
        self._view = None

    def set_sort(self, key: str, reverse: bool | None = None) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}")
        if reverse is None:
            reverse = not self.reverse if key == self.sort_key else key != "time"
        self.sort_key, self.reverse = key, reverse
        self._view = None

    # -- questions ---------------------------------------------------------------------

    def view(self) -> list[RequestTrace]:
        """The traces to list, filtered and sorted (cached until something changes)."""
        if self._view is None:
            selected = [t for t in self.traces if self._predicate(t)]
            if self.sort_key != "time" or self.reverse:
                selected.sort(key=SORT_KEYS[self.sort_key], reverse=self.reverse)  # type: ignore[arg-type]
            self._view = selected
        return self._view

    def rate_history(self, seconds: int, now_ns: int | None = None) -> list[float]:
        """Completed requests per second for the last `seconds` seconds (oldest first)."""
        if now_ns is None:
            now_ns = self.traces[-1].end_ns if self.traces else 0
        last = now_ns // 1_000_000_000
        return [float(self._per_second.get(s, 0)) for s in range(last - seconds + 1, last + 1)]

    def stage_stats(self, window: int = 2_000) -> dict[str, StageStats]:
        """Per-stage p50/p99/max over the last `window` traces, plus "total"."""
        recent = list(self.traces)[-window:]
        durations: dict[str, list[int]] = {name: [] for name in STAGE_NAMES}
        totals = []
        for trace in recent:
            totals.append(trace.total_ns)
            for stage in trace.stages:
                durations.setdefault(stage.name, []).append(stage.duration_ns)
        stats = {}
        for name, values in [*durations.items(), ("total", totals)]:
            values.sort()
            if values:
                stats[name] = StageStats(
                    len(values), percentile(values, 0.5), percentile(values, 0.99), values[-1]
                )
        return stats

    def slowest(self, count: int = 10, window: int = 2_000) -> list[RequestTrace]:
        recent = list(self.traces)[-window:]
        return sorted(recent, key=lambda t: t.total_ns, reverse=True)[:count]
