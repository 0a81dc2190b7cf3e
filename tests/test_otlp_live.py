"""`reqtrace run --otlp-endpoint`: the spans of a real traced run arrive at an OTLP/HTTP
receiver (tests/otlp_receiver.py, on 127.0.0.1) as the recording describes them, joined to
the caller's trace by `traceparent`; with the receiver down nothing is blocked or lost from
the trace, the drops are counted, and one warning says why."""

from __future__ import annotations

import http.client
import os
import re
from pathlib import Path

import pytest

from tests.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.run_fixtures import free_port, reqtrace_run, stop, wait_listening
from tracer.recording.reader import Recording, load_recording

pytestmark = pytest.mark.bpf

APP = "tests.server_apps.accuracy_app:app"


def get(port: int, target: str, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def traced_run(
    tmp_path: Path, endpoint: str, callers: list[tuple[str, str]]
) -> tuple[Recording, str, int]:
    """A run of the accuracy app: 12 /hello, 4 /sleep?ms=5, then one /hello per caller
    (trace id, span id) carrying its traceparent. Returns (recording, stderr, port)."""
    port = free_port()
    recording = tmp_path / "run.jsonl"
    args = (
        "--port", str(port), "--no-access-log", "--record", str(recording),
        "--otlp-endpoint", endpoint, "--otlp-service-name", "accuracy",
        "--otlp-resource", "deployment.environment=test",
    )  # fmt: skip
    with reqtrace_run(APP, *args) as process:
        wait_listening(port, process)
        for _ in range(12):
            assert get(port, "/hello") == 200
        for _ in range(4):
            assert get(port, "/sleep?ms=5") == 200
        for trace_id, span_id in callers:
            headers = {"traceparent": f"00-{trace_id}-{span_id}-01"}
            assert get(port, "/hello", headers) == 200
        _, err = stop(process)
    return load_recording(str(recording)), err, port


def test_the_spans_of_a_traced_run_reach_an_otlp_receiver(tmp_path: Path) -> None:
    caller = (os.urandom(16).hex(), os.urandom(8).hex())
    with otlp_receiver() as receiver:
        recording, err, port = traced_run(tmp_path, receiver.url, [caller])
        spans = receiver.spans()
    assert recording.footer is not None and recording.header is not None
    traces = {trace.id: trace for trace in recording.traces}
    assert len(traces) == 1 + 12 + 4 + 1  # wait_listening's GET / too
    assert recording.footer["otlp_exported"] == len(traces)
    assert recording.footer["otlp_dropped"] == 0
    assert f"{len(traces)} exported over OTLP, 0 OTLP drops" in err

    requests: dict[int, ReceivedSpan] = {}
    for span in spans:
        if span.span.kind == span.span.SPAN_KIND_SERVER:
            requests[span.attributes["reqtrace.request.id"]] = span
    assert set(requests) == set(traces)  # every request, once
    assert len(spans) == sum(1 + len(trace.stages) for trace in traces.values())
    offset = recording.header["clock_offset_ns"]

    resource = spans[0].resource
    assert resource["service.name"] == "accuracy"
    assert resource["host.name"] == recording.header["host"]
    assert resource["os.version"] == recording.header["kernel"]
    assert resource["process.pid"] == recording.header["server_pid"]
    assert resource["deployment.environment"] == "test"

    children: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    for request_id, request in requests.items():
        trace = traces[request_id]
        assert request.span.start_time_unix_nano == trace.start_ns + offset
        assert request.span.end_time_unix_nano == trace.end_ns + offset
        assert request.name == f"GET {trace.path}"
        a = request.attributes
        assert a["http.request.method"] == "GET"
        assert a["url.path"] == trace.path
        assert a["http.response.status_code"] == 200
        assert a["server.port"] == port
        assert a["client.address"] == "127.0.0.1"
        assert a["network.protocol.version"] == "1.1"
        stages = sorted(children[request.span_id], key=lambda s: s.span.start_time_unix_nano)
        assert [s.name for s in stages] == [stage.name for stage in trace.stages]
        for span, stage in zip(stages, trace.stages, strict=True):
            assert span.trace_id == request.trace_id
            assert span.span.start_time_unix_nano == stage.start_ns + offset
            assert span.span.end_time_unix_nano == stage.end_ns + offset
            assert span.attributes["reqtrace.layer"] == stage.layer
            if stage.name == "unobserved":
                assert span.attributes["reqtrace.unobserved"] is True

    joined = [r for r in requests.values() if r.trace_id == caller[0]]
    assert len(joined) == 1
    assert joined[0].parent_span_id == caller[1]
    others = [r for r in requests.values() if r is not joined[0]]
    assert all(r.parent_span_id == "" for r in others)  # no traceparent: a trace of its own
    assert len({r.trace_id for r in others}) == len(others)


def test_a_down_receiver_blocks_nothing_and_the_drops_are_counted(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there
    recording, err, _ = traced_run(tmp_path, endpoint, [])
    assert recording.footer is not None
    traced = len(recording.traces)
    assert traced == 1 + 12 + 4  # every request traced and recorded
    assert recording.footer["requests"] == traced
    assert recording.footer["otlp_exported"] == 0
    assert recording.footer["otlp_dropped"] == traced
    assert f"{traced} requests traced" in err
    assert f"0 exported over OTLP, {traced} OTLP drops" in err
    warnings = [line for line in err.splitlines() if "OTLP export to" in line]
    assert len(warnings) == 1, err
    assert re.match(rf"reqtrace: warning: OTLP export to {re.escape(endpoint)} ", warnings[0])
    assert "connection refused" in warnings[0]
    assert "Traceback" not in err and "Transient error" not in err
