"""Trace model: the canonical stages, the request line of a recording, and its round trip."""

from __future__ import annotations

import json

import pytest

from tracer.model.stages import LAYER_OF, STAGE_LAYERS, STAGE_NAMES, STAGE_SPANS
from tracer.model.trace import ConnectionFacts, RequestTrace, Stage

DESIGN_REQUEST_KEYS = {
    "type",
    "id",
    "method",
    "path",
    "status",
    "client",
    "server",
    "start_ns",
    "end_ns",
    "complete",
    "stages",
    "notes",
}


def sample_trace(**changes: object) -> RequestTrace:
    values: dict[str, object] = {
        "id": 7,
        "pid": 100,
        "fd": 9,
        "conn_id": 3,
        "seq": 2,
        "method": "POST",
        "path": "/upload",
        "status": 201,
        "client": ("10.0.0.2", 51000),
        "server": ("10.0.0.1", 8000),
        "start_ns": 1_000,
        "end_ns": 9_000,
        "complete": True,
        "stages": (
            Stage("ip_tcp", "kernel", 1_000, 1_500),
            Stage("recv", "syscall", 2_000, 2_200),
            Stage("app", "app", 3_000, 8_000),
        ),
        "notes": ("nic_irq: no hardware interrupt",),
        "connection": ConnectionFacts(handshake_us=12.5, srtt_us=40, requests_served=2),
        "details": {"recv_calls": 2, "wake_path_us": 1.5, "rx_dev": "lo"},
        "tid": 101,
        "query": "a=1",
        "http_version": "1.1",
        "outcome": "ok",
        "headers": (("host", "x"), ("authorization", "Bearer t")),
    }
    values.update(changes)
    return RequestTrace(**values)  # type: ignore[arg-type]


def test_the_canonical_stages_are_the_design_ones_in_timeline_order() -> None:
    assert STAGE_NAMES[:4] == ("nic_irq", "backlog", "softirq", "ip_tcp")
    design = [
        "nic_irq",
        "softirq",
        "ip_tcp",
        "wakeup",
        "event_loop",
        "recv",
        "parse",
        "app",
        "send",
    ]
    assert [name for name in STAGE_NAMES if name in design] == design
    assert LAYER_OF["event_loop"] == "event loop" and LAYER_OF["parse"] == "server"
    assert {layer for _, layer in STAGE_LAYERS} == {
        "kernel",
        "event loop",
        "syscall",
        "server",
        "app",
        "unobserved",
    }
    assert set(STAGE_SPANS) == set(STAGE_NAMES)


def test_durations_total_and_dominant_stage() -> None:
    trace = sample_trace()
    assert trace.total_ns == 8_000
    assert [s.duration_ns for s in trace.stages] == [500, 200, 5_000]
    assert trace.dominant_stage() == Stage("app", "app", 3_000, 8_000)
    assert trace.stage("recv") == Stage("recv", "syscall", 2_000, 2_200)
    assert trace.stage("send") is None
    assert sample_trace(stages=()).dominant_stage() is None


def test_the_request_line_has_the_design_keys_and_survives_json() -> None:
    trace = sample_trace()
    line = json.loads(json.dumps(trace.to_json()))

    assert set(line) >= DESIGN_REQUEST_KEYS
    assert line["type"] == "request"
    assert line["client"] == ["10.0.0.2", 51000]
    assert line["stages"][0] == {
        "name": "ip_tcp",
        "layer": "kernel",
        "start_ns": 1000,
        "end_ns": 1500,
    }
    assert line["connection"]["handshake_us"] == 12.5
    assert RequestTrace.from_json(line) == trace


def test_a_minimal_design_line_loads_with_defaults() -> None:
    line = {
        "type": "request",
        "id": 1,
        "method": "GET",
        "path": "/",
        "status": 200,
        "client": ["127.0.0.1", 1],
        "server": ["127.0.0.1", 2],
        "start_ns": 5,
        "end_ns": 9,
        "complete": False,
        "stages": [{"name": "recv", "layer": "syscall", "start_ns": 5, "end_ns": 6}],
        "notes": [],
    }
    trace = RequestTrace.from_json(line)
    assert trace.connection == ConnectionFacts()
    assert trace.details == {} and trace.headers == ()
    assert not trace.complete


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stages": None}, "stages and notes must be lists"),
        ({"start_ns": "5"}, "start_ns must be an integer"),
        ({"client": ["x"]}, "an address must be [ip, port]"),
        ({"stages": [{"name": "recv", "start_ns": 1}]}, "a stage without end_ns"),
    ],
)
def test_malformed_lines_raise_a_value_error_that_says_what(
    change: dict[str, object], message: str
) -> None:
    line = sample_trace().to_json()
    line.update(change)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RequestTrace.from_json(line)


def test_a_line_without_required_keys_names_them() -> None:
    line = sample_trace().to_json()
    del line["status"], line["stages"]
    with pytest.raises(ValueError, match="request without status, stages"):
        RequestTrace.from_json(line)


def test_loop_blame_survives_the_json_round_trip() -> None:
    from tracer.model.trace import Blame

    blame = (Blame("loop_queue", 812, "GET", "/cpu", 9_800_000), Blame("loop_queue", 0, "", "", 5))
    trace = sample_trace(blame=blame)
    line = trace.to_json()
    assert line["blame"][0] == {
        "stage": "loop_queue", "holder": 812, "method": "GET", "path": "/cpu", "ns": 9_800_000
    }  # fmt: skip
    again = RequestTrace.from_json(line)
    assert again.blame == blame and again.blame_of("loop_queue") == blame
    assert "blame" not in sample_trace().to_json()  # only when there is some
