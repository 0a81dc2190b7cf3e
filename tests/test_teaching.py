"""The teaching panel explains each stage with the selected request's own numbers."""

from __future__ import annotations

from pathlib import Path

from dashboards.teaching import LESSONS, explain, explain_connection
from tracer.model.stages import STAGE_NAMES
from tracer.recording.reader import load_recording

from .dashboard_fixtures import make_trace


def test_every_canonical_stage_has_a_lesson() -> None:
    assert set(STAGE_NAMES) <= set(LESSONS)


def test_app_lesson_quotes_this_request() -> None:
    trace = make_trace(3, path="/slow", app_us=20_000, status=201)
    text = explain(trace, "app").plain
    assert "GET /slow" in text and "20.0 ms" in text and "status 201" in text
    assert "% of this request's total" in text
    assert "Slow when:" in text and "Look at / tune:" in text


def test_wakeup_lesson_splits_wake_path_and_run_queue() -> None:
    trace = make_trace(1)
    trace = trace._replace(details={**trace.details, "wake_path_us": 4.0, "run_queue_us": 21.0})
    text = explain(trace, "wakeup").plain
    assert "waking the thread took 4 µs" in text and "waited 21 µs for a CPU" in text


def test_missing_stage_says_why_from_the_notes() -> None:
    trace = make_trace(1)  # loopback: no nic_irq stage, and a note saying so
    text = explain(trace, "nic_irq").plain
    assert "Not observed" in text and "software device" in text


def test_connection_facts() -> None:
    text = explain_connection(make_trace(12)).plain
    assert "handshake 35 µs" in text and "accept queue 120 µs" in text
    assert "receive window 65,483 B" in text and "request 3 on connection 2" in text


VIRTIO_RECORDING = Path(__file__).parent / "recordings" / "virtio_nic.jsonl"


def test_nic_lessons_quote_a_real_request_through_the_virtio_driver() -> None:
    """A request recorded by tests/test_kernel_vm.py: host -> qemu -> virtio-net -> 6.12."""
    recording = load_recording(str(VIRTIO_RECORDING))
    trace = next(
        t
        for t in recording.traces
        if t.client[0] == "10.0.2.2" and "nic_irq" in {s.name for s in t.stages}
    )
    irq = trace.details["irq"]
    nic = explain(trace, "nic_irq").plain
    assert f"behind eth0 raised interrupt {irq} on CPU" in nic
    softirq = explain(trace, "softirq").plain
    assert "the driver's NAPI poll, virtnet_poll on eth0" in softirq and "GRO" in softirq
