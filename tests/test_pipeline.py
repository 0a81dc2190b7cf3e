"""The live pipeline's batching: how kernel and hook batches are handed to the correlator."""

from __future__ import annotations

from tracer.correlate.correlator import Correlator, record_time
from tracer.correlate.synthetic import MS, Scenario
from tracer.records.hooks import ConnectionClosed, ConnectionOpened, RequestTiming
from tracer.session.pipeline import in_feed_order

HOOK_TYPES = (ConnectionOpened, RequestTiming, ConnectionClosed)


def _one_second_of_traffic() -> tuple[list, list]:  # type: ignore[type-arg]
    """Kernel and hook records of 40 requests spread over a second, as two streams."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    for n in range(40):
        connection.request(1_001 * MS + n * 25 * MS)
    records = scenario.time_ordered()
    kernel = [r for r in records if not isinstance(r, HOOK_TYPES)]
    hooks = [r for r in records if isinstance(r, HOOK_TYPES)]
    return kernel, hooks


def test_a_batch_spanning_longer_than_the_window_is_merged_by_time() -> None:
    """Records piled up for a second (e.g. while the server started) all correlate."""
    kernel, hooks = _one_second_of_traffic()
    correlator = Correlator()
    traces = []
    for record in in_feed_order(kernel, hooks):
        traces.extend(correlator.feed(record))
    traces.extend(correlator.flush())
    assert correlator.stats.late_records == 0
    assert len(traces) == 40 and all(t.complete for t in traces)


def test_fed_one_stream_after_the_other_the_same_batch_would_arrive_late() -> None:
    """Why the merge exists: the naive order makes every hook record late."""
    kernel, hooks = _one_second_of_traffic()
    correlator = Correlator()
    for record in kernel + hooks:
        correlator.feed(record)
    correlator.flush()
    assert correlator.stats.late_records > 0


def test_a_short_batch_keeps_its_order_and_costs_no_sort() -> None:
    kernel, hooks = _one_second_of_traffic()
    kernel = [r for r in kernel if record_time(r) < 1_010 * MS]
    hooks = [r for r in hooks if record_time(r) < 1_010 * MS]
    assert in_feed_order(kernel, hooks) == kernel + hooks
    assert in_feed_order([], hooks) == hooks and in_feed_order(kernel, []) == kernel
