"""OTLP export without BPF: the span tree of a request (tracer/recording/otlp.py), W3C trace
context, `reqtrace export --format otlp` to .pb and .json, and the live sink's queue, drops
and warnings (tracer/session/otlp_sink.py) against a local receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from tests.otlp_receiver import flatten, otlp_receiver
from tests.run_fixtures import free_port
from tracer.commands.export import run_export
from tracer.model.stages import LAYER_OF
from tracer.model.trace import Blame, ConnectionFacts, RequestTrace, Stage
from tracer.recording.otlp import SpanMapper, caller_context, otlp_resource
from tracer.recording.writer import Recorder
from tracer.session.otlp_sink import OtlpSink, failure_reason

OFFSET = 1_700_000_000_000_000_000  # wall clock minus monotonic, ns
HEADER: dict[str, Any] = {
    "host": "box",
    "kernel": "6.18.0-test",
    "app": "shop:app",
    "server_pid": 4242,
    "started_unix_ns": OFFSET + 900_000_000,
    "clock_offset_ns": OFFSET,
}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"

STAGES = ("backlog", "softirq", "ip_tcp", "wakeup", "event_loop", "recv", "parse", "app", "send")


def make_trace(
    request_id: int = 1,
    path: str = "/users/42",
    start: int = 1_000_000_000,
    stages: Sequence[str] = STAGES,
    headers: tuple[tuple[str, str], ...] = (),
    method: str = "GET",
    status: int = 200,
    **extra: Any,
) -> RequestTrace:
    """A request whose stages follow each other, 10 µs apart (app 1 ms)."""
    built = []
    cursor = start
    for name in stages:
        length = 1_000_000 if name == "app" else 10_000
        built.append(Stage(name, LAYER_OF[name], cursor, cursor + length))
        cursor += length
    defaults: dict[str, Any] = {
        "pid": 4242,
        "fd": 9,
        "conn_id": 3,
        "seq": 1,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "complete": True,
        "tid": 4243,
        "http_version": "1.1",
        "outcome": "ok",
        "connection": ConnectionFacts(handshake_us=9.5, accept_queue_us=80.0, srtt_us=32),
        "details": {"rx_cpu": 1, "recv_calls": 1},
    }
    defaults.update(extra)
    return RequestTrace(
        id=request_id,
        method=method,
        path=path,
        status=status,
        start_ns=start,
        end_ns=cursor,
        stages=tuple(built),
        headers=headers,
        **defaults,
    )


def mapper() -> SpanMapper:
    return SpanMapper(otlp_resource(HEADER, "shop"), OFFSET)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- the span tree ------------------------------------------------------------------------


def test_a_request_is_a_server_span_with_one_child_per_stage_in_wall_clock_time() -> None:
    trace = make_trace()
    spans = mapper().spans(trace)
    request, children = spans[0], spans[1:]
    assert request.kind is SpanKind.SERVER
    assert request.name == "GET /users/{id}"  # the route: id-like segments as {id}
    assert request.parent is None
    assert request.start_time == trace.start_ns + OFFSET
    assert request.end_time == trace.end_ns + OFFSET
    assert [span.name for span in children] == list(STAGES)
    context = request.get_span_context()
    assert context is not None
    for span, stage in zip(children, trace.stages, strict=True):
        child = span.get_span_context()
        assert child is not None and span.parent is not None
        assert span.kind is SpanKind.INTERNAL
        assert child.trace_id == context.trace_id
        assert span.parent.span_id == context.span_id
        assert child.span_id != context.span_id
        assert (span.start_time, span.end_time) == (stage.start_ns + OFFSET, stage.end_ns + OFFSET)
        assert attrs(span)["reqtrace.layer"] == stage.layer
    assert len({s.get_span_context().span_id for s in spans}) == len(spans)  # type: ignore[union-attr]
    assert attrs(children[1])["reqtrace.cpu"] == 1  # softirq: on the receiving CPU
    assert attrs(children[5])["thread.id"] == 4243  # recv: on the server thread


def test_the_request_span_follows_the_http_server_conventions() -> None:
    headers = (("host", "shop.example:8000"), ("user-agent", "curl/8"), ("accept", "*/*"))
    trace = make_trace(headers=headers, query="page=2&sig=SECRET")
    a = attrs(mapper().spans(trace)[0])
    assert a["http.request.method"] == "GET"
    assert a["url.path"] == "/users/42"
    assert a["url.scheme"] == "http"
    assert a["url.query"] == "page=2&sig=REDACTED"
    assert a["http.response.status_code"] == 200
    assert a["network.protocol.version"] == "1.1"
    assert a["server.address"] == "shop.example"
    assert a["server.port"] == 8000
    assert a["client.address"] == "127.0.0.1"
    assert a["client.port"] == 50000
    assert "network.peer.address" not in a  # would repeat client.address (costs encoding)
    assert a["user_agent.original"] == "curl/8"
    assert "http.route" not in a  # the server does not know the app's routes: not guessed
    assert a["reqtrace.route"] == "/users/{id}"
    assert a["reqtrace.request.id"] == 1
    assert a["reqtrace.complete"] is True
    assert a["reqtrace.connection.handshake_us"] == 9.5
    assert a["reqtrace.connection.srtt_us"] == 32
    assert a["reqtrace.detail.recv_calls"] == 1
    assert a["reqtrace.dominant_stage"] == "app"
    assert a["reqtrace.missing_stages"] == ["nic_irq"]  # required stages it lacks


def test_server_errors_set_error_status_and_unknown_methods_follow_the_conventions() -> None:
    failed = mapper().spans(make_trace(status=503))[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["error.type"] == "503"
    client_error = mapper().spans(make_trace(status=404))[0]
    assert client_error.status.status_code is StatusCode.UNSET  # 4xx: the client's fault
    odd = mapper().spans(make_trace(method="BREW"))[0]
    assert odd.name == "HTTP"
    assert attrs(odd)["http.request.method"] == "_OTHER"
    assert attrs(odd)["http.request.method_original"] == "BREW"


def test_a_traceparent_makes_the_request_a_child_of_the_callers_span() -> None:
    headers = (("traceparent", TRACEPARENT), ("tracestate", "vendor=abc"))
    request = mapper().spans(make_trace(headers=headers))[0]
    context = request.get_span_context()
    assert context is not None and request.parent is not None
    assert f"{context.trace_id:032x}" == CALLER_TRACE
    assert f"{request.parent.span_id:016x}" == CALLER_SPAN
    assert request.parent.is_remote
    assert context.trace_state.get("vendor") == "abc"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # all-zero trace id is invalid
        f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",  # version ff is invalid
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(value: str) -> None:
    assert caller_context((("traceparent", value),)) is None
    request = mapper().spans(make_trace(headers=(("traceparent", value),)))[0]
    assert request.parent is None
    assert f"{request.get_span_context().trace_id:032x}" != CALLER_TRACE  # type: ignore[union-attr]


def test_without_traceparent_every_request_starts_its_own_trace() -> None:
    m = mapper()
    first, second = m.spans(make_trace(1))[0], m.spans(make_trace(2))[0]
    assert first.get_span_context().trace_id != second.get_span_context().trace_id  # type: ignore[union-attr]


def test_unobserved_gaps_are_marked_with_their_reason() -> None:
    stages = ("backlog", "softirq", "ip_tcp", "unobserved", "recv", "parse", "app", "send")
    note = "unobserved: ip_tcp → recv: records lost (ring buffer full)"
    trace = make_trace(stages=stages, notes=("wakeup: lost", note), complete=False)
    spans = mapper().spans(trace)
    gap = next(span for span in spans if span.name == "unobserved")
    assert attrs(gap)["reqtrace.unobserved"] is True
    assert attrs(gap)["reqtrace.note"] == "records lost (ring buffer full)"
    request = attrs(spans[0])
    assert request["reqtrace.complete"] is False
    assert request["reqtrace.notes"] == ["wakeup: lost", note]
    assert "wakeup" in request["reqtrace.missing_stages"]
    assert request["reqtrace.unobserved_us"] == 10.0


def test_loop_blame_names_the_holder_and_links_to_its_span_when_known() -> None:
    m = mapper()
    holder = m.spans(make_trace(7, path="/burn"))[0]
    stages = ("backlog", "softirq", "ip_tcp", "loop_busy", "event_loop", "recv", "parse", "app")
    blame = (
        Blame("loop_busy", 7, "GET", "/burn", 5_000_000),
        Blame("loop_busy", 0, "", "", 20_000),
        Blame("loop_busy", 99, "GET", "/later", 10_000),  # not exported (yet): no link
    )
    waiter = m.spans(make_trace(8, stages=stages, blame=blame))
    busy = next(span for span in waiter if span.name == "loop_busy")
    a = attrs(busy)
    assert a["reqtrace.loop.holder_ids"] == [7, 0, 99]
    assert a["reqtrace.loop.holders"] == ["GET /burn #7", "other work", "GET /later #99"]
    assert a["reqtrace.loop.held_us"] == [5000.0, 20.0, 10.0]
    assert [link.context for link in busy.links] == [holder.get_span_context()]
    assert busy.links[0].attributes == {
        "reqtrace.link": "held the event loop",
        "reqtrace.loop.held_us": 5000.0,
    }


def test_the_resource_says_who_served_where(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,host.name=x")
    resource = otlp_resource(HEADER, None, {"team": "payments"}).attributes
    assert resource["service.name"] == "reqtrace"
    assert resource["host.name"] == "x"  # the environment over the header
    assert resource["os.version"] == "6.18.0-test"
    assert resource["process.pid"] == 4242
    assert resource["deployment.environment"] == "staging"
    assert resource["team"] == "payments"
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    again = otlp_resource(HEADER, "checkout").attributes
    assert again["service.name"] == "checkout"
    assert again["service.instance.id"] == resource["service.instance.id"]  # one per run
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert otlp_resource(HEADER).attributes["service.name"] == "from-env"


# -- reqtrace export --format otlp ---------------------------------------------------------


def write_recording(path: Path, header: dict[str, Any] | None = None) -> list[RequestTrace]:
    traces = [
        make_trace(1, path="/hello", start=1_000_000_000),
        make_trace(2, path="/hello", start=1_010_000_000, headers=(("traceparent", TRACEPARENT),)),
        make_trace(3, path="/users/7", start=1_020_000_000, status=500),
    ]
    with Recorder(str(path), HEADER if header is None else header) as recorder:
        for trace in traces:
            recorder.write(trace)
        recorder.close({"recv": 0})
    return traces


def hex_to_base64(document: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON's hex ids back to the protobuf JSON mapping's base64, to parse it."""
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for obj in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode()
    return document


def test_export_otlp_protobuf_and_json_hold_the_same_spans(tmp_path: Path) -> None:
    recording = tmp_path / "run.jsonl"
    traces = write_recording(recording)
    pb, js = tmp_path / "spans.pb", tmp_path / "spans.json"
    assert run_export(str(recording), "otlp", str(pb), "shop", ["env=test"]) == 0
    assert run_export(str(recording), "otlp", str(js), "shop", ["env=test"]) == 0
    assert stat.S_IMODE(pb.stat().st_mode) == 0o600

    message = ExportTraceServiceRequest.FromString(pb.read_bytes())
    spans = flatten(message)
    assert len(spans) == sum(1 + len(trace.stages) for trace in traces)
    resource = spans[0].resource
    assert resource["service.name"] == "shop"
    assert resource["env"] == "test"
    assert resource["host.name"] == "box"
    assert spans[0].scope == "reqtrace"
    requests = [s for s in spans if s.span.kind == s.span.SPAN_KIND_SERVER]
    assert [s.attributes["reqtrace.request.id"] for s in requests] == [1, 2, 3]
    joined = requests[1]
    assert (joined.trace_id, joined.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert requests[2].span.status.code == requests[2].span.status.STATUS_CODE_ERROR
    for request in requests:
        children = [s for s in spans if s.parent_span_id == request.span_id]
        assert len(children) == len(traces[0].stages)
        assert all(child.trace_id == request.trace_id for child in children)

    document = json.loads(js.read_text())
    first = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(first["traceId"]) == 32 and int(first["traceId"], 16)  # hex, not base64
    assert first["kind"] == 2  # enums as integers (OTLP/JSON)
    assert ParseDict(hex_to_base64(document), ExportTraceServiceRequest()) == message


def test_export_otlp_is_reproducible(tmp_path: Path) -> None:
    recording = tmp_path / "run.jsonl"
    write_recording(recording)
    first, second = tmp_path / "1.pb", tmp_path / "2.pb"
    assert run_export(str(recording), "otlp", str(first)) == 0
    assert run_export(str(recording), "otlp", str(second)) == 0
    assert first.read_bytes() == second.read_bytes()


def test_export_otlp_needs_the_clock_offset_of_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "old.jsonl"
    write_recording(recording, {"host": "box"})
    assert run_export(str(recording), "otlp", str(tmp_path / "x.pb")) == 2  # 2: cannot do it
    assert "clock_offset_ns" in capsys.readouterr().err
    assert not (tmp_path / "x.pb").exists()


def test_export_otlp_to_stdout_is_otlp_json(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    recording = tmp_path / "run.jsonl"
    write_recording(recording)
    assert run_export(str(recording), "otlp", "-") == 0
    document = json.loads(capsysbinary.readouterr().out)
    assert len(document["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 3 * 10


# -- the live sink --------------------------------------------------------------------------


class FakeExporter(SpanExporter):
    """Records batches; fails while `failing`; blocks while `gate` is clear."""

    def __init__(self) -> None:
        self.batches: list[Sequence[ReadableSpan]] = []
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()
        self.shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.wait(10)
        if self.failing:
            logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").warning(
                "Transient error HTTPConnectionPool(host='127.0.0.1', port=9): Max retries"
                " exceeded (Caused by NewConnectionError('...: [Errno 111] Connection refused'))"
            )
            return SpanExportResult.FAILURE
        self.batches.append(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True
        self.gate.set()


def sink_with(exporter: SpanExporter, **options: Any) -> tuple[OtlpSink, list[str]]:
    said: list[str] = []
    sink = OtlpSink(
        "http://127.0.0.1:9/v1/traces", HEADER, OFFSET, warn=said.append, exporter=exporter,
        **options,
    )  # fmt: skip
    return sink, said


def test_the_sink_exports_in_batches_and_counts() -> None:
    exporter = FakeExporter()
    sink, said = sink_with(exporter, batch_size=4, interval_s=0.05)
    sink.start()
    sink([make_trace(i) for i in range(10)])
    sink.close()
    assert sink.exported == 10 and sink.dropped == 0 and said == []
    assert sum(len(batch) for batch in exporter.batches) == 10 * (1 + len(STAGES))
    assert max(len(batch) for batch in exporter.batches) <= 4 * (1 + len(STAGES))
    assert exporter.shut
    assert sink.counters() == {"otlp_exported": 10, "otlp_dropped": 0}


def test_a_blocked_exporter_never_blocks_the_pipeline_and_drops_are_counted() -> None:
    exporter = FakeExporter()
    exporter.gate.clear()  # the endpoint hangs
    sink, _ = sink_with(exporter, queue_size=8, batch_size=2, interval_s=0.01, flush_timeout_s=0.5)
    sink.start()
    started = time.monotonic()
    for i in range(100):
        sink([make_trace(i)])
        time.sleep(0.001)
    assert time.monotonic() - started < 2.0  # appends only, whatever the exporter does
    assert sink.dropped >= 100 - 8 - 2
    sink.close()  # gives up on the hung batch after flush_timeout_s, counts it
    assert sink.exported + sink.dropped == 100


def test_failures_warn_once_and_recovery_is_said_once() -> None:
    exporter = FakeExporter()
    exporter.failing = True
    sink, said = sink_with(exporter, batch_size=1, interval_s=0.01, cpu_share=1.0)
    sink.start()
    for i in range(5):
        sink([make_trace(i)])
        time.sleep(0.05)
    exporter.failing = False
    sink([make_trace(99)])
    sink.close()
    assert sink.dropped == 5 and sink.exported == 1
    assert len(said) == 2
    assert "failed (connection refused)" in said[0]
    assert "works again (5 requests were dropped meanwhile)" in said[1]


def test_failure_reasons_are_short() -> None:
    refused = (
        "Caused by NewConnectionError('<...>: Failed to establish: [Errno 111] Connection refused')"
    )
    assert failure_reason([refused]) == "connection refused"
    assert failure_reason(["Failed to export spans batch code: 404, reason: Not Found"]) == (
        "HTTP 404 Not Found"
    )
    assert failure_reason(["Read timed out. (read timeout=5)"]) == "timed out"
    gave_up = "Failed to export spans batch due to timeout, max retries or shutdown."
    assert failure_reason([gave_up]).startswith("no success within the export timeout")


def test_the_sink_delivers_to_a_real_otlp_receiver() -> None:
    with otlp_receiver() as receiver:
        sink, said = sink_with(OTLPSpanExporter(endpoint=receiver.url, timeout=5), interval_s=0.05)
        sink.start()
        sink([make_trace(1), make_trace(2, headers=(("traceparent", TRACEPARENT),))])
        sink.close()
        spans = receiver.spans()
    assert said == [] and sink.exported == 2
    assert receiver.content_types == ["application/x-protobuf"]
    assert len(spans) == 2 * (1 + len(STAGES))
    joined = next(s for s in spans if s.attributes.get("reqtrace.request.id") == 2)
    assert (joined.trace_id, joined.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)


def test_an_unreachable_endpoint_gives_one_warning_and_no_traceback(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there
    sink, said = sink_with(
        OTLPSpanExporter(endpoint=url, timeout=2.5), batch_size=3, interval_s=0.05, cpu_share=1.0
    )
    sink.endpoint = url
    sink.start()
    for i in range(6):
        sink([make_trace(i)])
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        time.sleep(0.05)
    sink.close()
    assert sink.exported == 0 and sink.dropped == 6
    assert len(said) == 1, said
    assert said[0].startswith(
        f"reqtrace: warning: OTLP export to {url} failed (connection refused)"
    )
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Transient error" not in captured.err
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_closing_a_sink_that_never_started_counts_what_it_held() -> None:
    sink, said = sink_with(FakeExporter())
    sink([make_trace(1), make_trace(2)])
    sink.close()
    sink.close()  # idempotent
    assert sink.dropped == 2 and sink.exported == 0
    assert len(said) == 1 and "2 requests were dropped" in said[0]
