"""The correlator's reorder window: time order out, bounded, late items counted."""

from __future__ import annotations

import pytest

from tracer.correlate.reorder import ReorderBuffer


def released(entries: object) -> list[str]:
    return [item for _, _, item in entries]  # type: ignore[attr-defined]


def test_items_come_out_in_time_order_once_the_watermark_passes() -> None:
    window: ReorderBuffer[str] = ReorderBuffer(window_ns=100, max_items=10)
    assert released(window.push(1000, "b")) == []
    assert released(window.push(990, "a")) == []
    assert released(window.push(1050, "c")) == []
    assert window.watermark == 950
    assert released(window.push(1095, "d")) == ["a"]  # watermark 995
    assert released(window.push(1100, "e")) == ["b"]
    assert released(window.advance(1200)) == ["c", "d", "e"]
    assert len(window) == 0 and window.late == 0


def test_equal_timestamps_keep_their_arrival_order() -> None:
    window: ReorderBuffer[str] = ReorderBuffer(window_ns=1, max_items=10)
    assert released(window.push(5, "first")) == []
    assert released(window.push(5, "second")) == []
    assert released(window.advance(6)) == ["first", "second"]


def test_late_items_come_out_at_once_and_are_counted() -> None:
    window: ReorderBuffer[str] = ReorderBuffer(window_ns=10, max_items=10)
    window.push(100, "x")
    assert released(window.push(50, "late")) == ["late"]
    assert window.late == 1


def test_the_buffer_never_holds_more_than_its_capacity() -> None:
    window: ReorderBuffer[int] = ReorderBuffer(window_ns=1_000_000, max_items=3)
    out: list[int] = []
    for ts in range(10):
        out += released(window.push(ts, ts))  # type: ignore[arg-type]
        assert len(window) <= 3
    assert out == list(range(7))
    assert window.forced == 7
    assert released(window.drain()) == [7, 8, 9]  # type: ignore[comparison-overlap]


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        ReorderBuffer(window_ns=-1, max_items=1)
    with pytest.raises(ValueError):
        ReorderBuffer(window_ns=0, max_items=0)
