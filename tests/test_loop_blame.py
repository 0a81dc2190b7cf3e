"""Who held the event loop (tracer/correlate/loop_blame.py), from hook stamps alone."""

from __future__ import annotations

from tracer.correlate.loop_blame import LoopHistory
from tracer.correlate.synthetic import MS, US, timing
from tracer.model.stages import LOOP_WAIT_STAGES
from tracer.model.trace import Blame, Stage
from tracer.records.hooks import RequestTiming


def burner(at: int, burn: int = 5 * MS) -> RequestTiming:
    """A handler that burns `burn` of CPU on the loop from `at`, then answers."""
    return timing(
        7, 1, 1, path="/burn", first_byte=at - 30 * US, headers_done=at - 20 * US,
        app_called=at, chunks=((at + burn, 100),), response_done=at + burn + 10 * US,
        app_returned=at + burn + 20 * US,
    )  # fmt: skip


def sleeper(at: int, sleep: int = 20 * MS) -> RequestTiming:
    """A handler that awaits `sleep` (the loop is free meanwhile), then answers."""
    return timing(
        8, 2, 1, path="/slow", first_byte=at - 30 * US, headers_done=at - 20 * US,
        app_called=at, chunks=((at + sleep, 100),), response_done=at + sleep + 10 * US,
        app_returned=at + sleep + 20 * US,
    )  # fmt: skip


def waiter(ready: int, epoll_exit: int) -> tuple[RequestTiming, tuple[Stage, ...]]:
    """A fast request whose data was ready at `ready` while the loop was busy."""
    record = timing(
        9, 3, 1, path="/hello", first_byte=epoll_exit + 20 * US,
        headers_done=epoll_exit + 30 * US, app_called=epoll_exit + 40 * US,
        chunks=((epoll_exit + 60 * US, 100),), response_done=epoll_exit + 70 * US,
        app_returned=epoll_exit + 80 * US,
    )  # fmt: skip
    return record, (Stage("loop_busy", "event loop", ready, epoll_exit),)


def test_the_request_burning_the_loop_is_the_holder_not_the_one_asleep() -> None:
    history = LoopHistory()
    t = 1_000 * MS
    history.add(1, sleeper(t - 2 * MS))  # asleep across the whole wait
    history.add(2, burner(t))  # burns t .. t + 5 ms
    record, stages = waiter(t + 1 * MS, t + 5 * MS + 50 * US)

    blame = history.blame(3, record, stages, LOOP_WAIT_STAGES)

    assert blame[0] == Blame("loop_busy", 2, "GET", "/burn", 4 * MS + 20 * US)
    assert blame[1] == Blame("loop_busy", 0, "", "", 30 * US)  # the loop's way back to epoll
    assert len(blame) == 2 and sum(b.ns for b in blame) == stages[0].duration_ns


def test_with_no_long_request_around_the_wait_is_other_work() -> None:
    history = LoopHistory()
    t = 1_000 * MS
    record, stages = waiter(t, t + 2 * MS)

    blame = history.blame(3, record, stages, LOOP_WAIT_STAGES)

    assert blame == (Blame("loop_busy", 0, "", "", 2 * MS),)


def test_short_waits_are_not_examined() -> None:
    history = LoopHistory()
    history.add(2, burner(1_000 * MS))
    record, stages = waiter(1_000 * MS + 1 * MS, 1_000 * MS + 1 * MS + 100 * US)

    assert history.blame(3, record, stages, LOOP_WAIT_STAGES) == ()
