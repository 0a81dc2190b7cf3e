"""OTLP: a request trace as OpenTelemetry spans, for Jaeger, Grafana Tempo or a Collector.

One request becomes one span tree:

    GET /users/{id}                   SERVER span: the whole request (first kernel timestamp
    ├── backlog                       → last send exit), HTTP server semantic conventions
    ├── softirq                       (http.request.method, url.path, http.response.status_code,
    ├── ip_tcp                        server.port, client.address, network.protocol.version)
    ├── wakeup                        and the request's own facts under reqtrace.*
    ├── ...                           INTERNAL spans, one per stage of the timeline, in order
    └── send                          (stage names from tracer/model/stages.py)

- Times: the trace's CLOCK_MONOTONIC ns plus the recording's `clock_offset_ns` (wall-clock
  minus monotonic, taken when the run started) = Unix-epoch ns, as OTLP wants.
- Distributed tracing: a request that carries a W3C `traceparent` header (RequestTrace.headers,
  captured by `reqtrace run`) becomes a child of the caller's span: same trace id, parent
  span id = the caller's, `tracestate` kept. Without one it starts a new trace.
- Gaps: an `unobserved` stage span says so (`reqtrace.unobserved=true`) and why
  (`reqtrace.note`, the reason the stage builder wrote); required stages the trace lacks are
  listed on the request span (`reqtrace.missing_stages`) next to all its notes.
- Loop blame: a loop-wait stage (loop_busy, loop_queue, handoff) names who held the event
  loop meanwhile (`reqtrace.loop.holders`, `.holder_ids`, `.held_us`) and links to the
  holder's request span when that span is known (exported earlier in the same run or file).
- Route: the bundled server does not know the app's routing table, so `http.route` is not
  set (the conventions forbid guessing it); the span name uses the path with id-like
  segments as {id} (report.route_of), also kept as `reqtrace.route`.

Spans are the SDK's `ReadableSpan`s, encoded by the OTLP exporter package's own encoder
(`encode_spans`) into an `ExportTraceServiceRequest`: no protobuf is written by hand.
Building them through the SDK's Tracer costs ~4x more CPU per request (its sampler,
attribute validation and span processors) for the same result, since every value here is
final when the trace is emitted.
"""

from __future__ import annotations

import base64
import os
import random
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    get_current_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tracer import __version__
from tracer.model.stages import (
    CPU_TRACK_STAGES,
    LOOP_WAIT_STAGES,
    OPTIONAL_STAGES,
    STAGE_NAMES,
    THREAD_TRACK_STAGES,
)
from tracer.model.trace import RequestTrace
from tracer.recording.reader import Recording
from tracer.recording.report import route_of

SCOPE = InstrumentationScope("reqtrace", __version__)
DEFAULT_SERVICE_NAME = "reqtrace"
REMEMBERED_SPANS = 4096  # request id → span context, for links to loop holders (live runs)

# HTTP methods the conventions know; any other is "_OTHER" (the original kept beside it).
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
# Query keys the conventions ask to redact in url.query (signed-URL credentials).
SIGNED_URL_KEYS = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)
_REQUIRED_STAGES = tuple(name for name in STAGE_NAMES if name not in OPTIONAL_STAGES)
_CPU_STAGES = frozenset(CPU_TRACK_STAGES)
_THREAD_STAGES = frozenset(THREAD_TRACK_STAGES)
_PROPAGATOR = TraceContextTextMapPropagator()
_ZERO_IS_NOTHING = frozenset({"retransmits", "resets", "drops"})  # absent: none happened
_ROUTES: dict[str, str] = {}  # path → route_of(path), bounded
_GAP_NOTE = re.compile(r"^unobserved: [^:]*: ")


class _Resource(Resource):
    """A Resource whose hash is computed once: the exporter's encoder groups spans by
    resource and hashes it for every span (a JSON dump of its attributes each time)."""

    def __init__(self, attributes: Mapping[str, Any], schema_url: str | None = None) -> None:
        super().__init__(dict(attributes), schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def otlp_resource(
    header: Mapping[str, Any] | None,
    service_name: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Resource:
    """The resource every span of a run carries: who served, where, under which kernel.

    From the recording header: host.name, os.version (the kernel), process.pid (the
    server), reqtrace.app, service.instance.id (derived from the run); then
    OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over them; then `service_name`
    (--otlp-service-name; default "reqtrace") and `attributes` (--otlp-resource KEY=VALUE).
    """
    header = header or {}
    combined: dict[str, Any] = {"os.type": "linux", "reqtrace.version": __version__}
    for key, name in (
        ("host", "host.name"),
        ("kernel", "os.version"),
        ("app", "reqtrace.app"),
        ("address", "reqtrace.address"),
    ):
        if isinstance(header.get(key), str) and header[key]:
            combined[name] = header[key]
    if isinstance(header.get("server_pid"), int) and header["server_pid"]:
        combined["process.pid"] = header["server_pid"]
    environment = Resource.create({})  # telemetry.sdk.*, OTEL_RESOURCE_ATTRIBUTES, ...
    combined.update(environment.attributes)
    # One instance id per run (not the SDK's random one per process): the live spans of a
    # run and a later export of its recording name the same instance.
    started = header.get("started_unix_ns")
    explicit = OTELResourceDetector().detect().attributes.get("service.instance.id")
    if not explicit and isinstance(started, int):
        run = f"reqtrace:{header.get('host')}:{header.get('server_pid')}:{started}"
        combined["service.instance.id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, run))
    if service_name:
        combined["service.name"] = service_name
    elif str(combined.get("service.name", "")).startswith("unknown_service"):
        combined["service.name"] = DEFAULT_SERVICE_NAME
    combined.update(attributes or {})
    return _Resource(combined, environment.schema_url)


def caller_context(headers: Sequence[tuple[str, str]]) -> SpanContext | None:
    """The caller's span context from a W3C `traceparent` (+ `tracestate`), if valid."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower == "traceparent" or lower == "tracestate":
            carrier[lower] = value
    if "traceparent" not in carrier:
        return None
    context = get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return context if context.is_valid else None


def _random_ids() -> random.Random:
    return random.Random(os.urandom(16))


class SpanMapper:
    """Turns request traces into spans: one SERVER span per request, one INTERNAL per stage.

    `ids` makes the trace and span ids: seed it (see `recording_ids`) for reproducible files;
    live runs use fresh random ones. The mapper remembers the span context of the last
    REMEMBERED_SPANS requests, so a loop-wait stage can link to the request that held the loop.
    """

    def __init__(
        self, resource: Resource, clock_offset_ns: int, ids: random.Random | None = None
    ) -> None:
        self.resource = resource
        self.clock_offset_ns = clock_offset_ns
        self._ids = ids or _random_ids()
        self._known: dict[int, SpanContext] = {}

    def _span_id(self) -> int:
        while True:
            value = self._ids.getrandbits(64)
            if value:
                return value

    def _trace_id(self) -> int:
        while True:
            value = self._ids.getrandbits(128)
            if value:
                return value

    def spans(self, trace: RequestTrace) -> list[ReadableSpan]:
        """The request span first, then its stage spans in timeline order."""
        offset = self.clock_offset_ns
        caller = caller_context(trace.headers) if trace.headers else None
        if caller is not None:
            context = SpanContext(
                caller.trace_id, self._span_id(), False, _SAMPLED, caller.trace_state
            )
        else:
            context = SpanContext(self._trace_id(), self._span_id(), False, _SAMPLED)
        method = trace.method.upper()
        known = method in KNOWN_METHODS
        route = _ROUTES.get(trace.path)
        if route is None:
            route = route_of(trace.path)
            if len(_ROUTES) < 4096:
                _ROUTES[trace.path] = route
        attributes = request_attributes(trace, route)
        failed = trace.status >= 500 or (not trace.status and trace.outcome not in ("", "ok"))
        request = ReadableSpan(
            f"{method} {route}" if known else "HTTP",
            context,
            caller,
            self.resource,
            attributes,
            (),
            (),
            SpanKind.SERVER,
            None,
            _ERROR if failed else _OK,
            trace.start_ns + offset,
            trace.end_ns + offset,
            SCOPE,
        )
        out = [request]
        trace_id = context.trace_id
        gap_notes = iter([_GAP_NOTE.sub("", n) for n in trace.notes if n.startswith("unobserved:")])
        cpu = trace.details.get("rx_cpu")
        for stage in trace.stages:
            name = stage.name
            stage_attributes: dict[str, Any] = {"reqtrace.layer": stage.layer}
            links: Sequence[Link] = ()
            if name == "unobserved":
                stage_attributes["reqtrace.unobserved"] = True
                note = next(gap_notes, "")
                if note:
                    stage_attributes["reqtrace.note"] = note
            elif name in LOOP_WAIT_STAGES and trace.blame:
                links = self._blame(trace, name, stage_attributes)
            if name in _CPU_STAGES and isinstance(cpu, int):
                stage_attributes["reqtrace.cpu"] = cpu
            elif name in _THREAD_STAGES and trace.tid:
                stage_attributes["thread.id"] = trace.tid
            out.append(
                ReadableSpan(
                    name,
                    SpanContext(trace_id, self._span_id(), False, _SAMPLED),
                    context,
                    self.resource,
                    stage_attributes,
                    (),
                    links,
                    SpanKind.INTERNAL,
                    None,
                    _OK,
                    stage.start_ns + offset,
                    stage.end_ns + offset,
                    SCOPE,
                )
            )
        self._remember(trace.id, context)
        return out

    def _blame(self, trace: RequestTrace, stage: str, attributes: dict[str, Any]) -> list[Link]:
        entries = trace.blame_of(stage)
        if not entries:
            return []
        attributes["reqtrace.loop.holder_ids"] = [entry.holder for entry in entries]
        attributes["reqtrace.loop.holders"] = [
            f"{entry.method} {entry.path} #{entry.holder}" if entry.holder else "other work"
            for entry in entries
        ]
        attributes["reqtrace.loop.held_us"] = [round(entry.ns / 1000, 3) for entry in entries]
        links = []
        for entry in entries:
            holder = self._known.get(entry.holder) if entry.holder else None
            if holder is not None:
                links.append(
                    Link(
                        holder,
                        {
                            "reqtrace.link": "held the event loop",
                            "reqtrace.loop.held_us": round(entry.ns / 1000, 3),
                        },
                    )
                )
        return links

    def _remember(self, request_id: int, context: SpanContext) -> None:
        known = self._known
        known[request_id] = context
        if len(known) > REMEMBERED_SPANS:
            del known[next(iter(known))]

    def spans_of(self, traces: Iterable[RequestTrace]) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        for trace in traces:
            out.extend(self.spans(trace))
        return out


def request_attributes(trace: RequestTrace, route: str) -> dict[str, Any]:
    """The request span's attributes: HTTP server conventions, then reqtrace.*."""
    method = trace.method.upper()
    attributes: dict[str, Any] = {
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
        "url.path": trace.path,
        "url.scheme": "http",
    }
    if method not in KNOWN_METHODS:
        attributes["http.request.method_original"] = trace.method
    if trace.query:
        attributes["url.query"] = redact_query(trace.query)
    if trace.status:
        attributes["http.response.status_code"] = trace.status
    if trace.status >= 500:
        attributes["error.type"] = str(trace.status)
    elif not trace.status and trace.outcome not in ("", "ok"):
        attributes["error.type"] = trace.outcome
    if trace.http_version:
        attributes["network.protocol.version"] = trace.http_version
    host = ""
    user_agent = ""
    for name, value in trace.headers:
        lower = name.lower()
        if lower == "host":
            host = value
        elif lower == "user-agent":
            user_agent = value
    # Only what the conventions require or recommend first: every attribute costs ~5 µs of
    # encoding here (network.peer.* and network.local.* would repeat client.* and server.*).
    server_ip, server_port = trace.server
    client_ip, client_port = trace.client
    attributes["server.address"] = _host_name(host) or server_ip
    if server_port:
        attributes["server.port"] = server_port
    if client_ip:
        attributes["client.address"] = client_ip
    if client_port:
        attributes["client.port"] = client_port
    if user_agent:
        attributes["user_agent.original"] = user_agent

    attributes["reqtrace.request.id"] = trace.id
    attributes["reqtrace.route"] = route
    attributes["reqtrace.complete"] = trace.complete
    if trace.outcome not in ("", "ok"):
        attributes["reqtrace.outcome"] = trace.outcome
    dominant = trace.dominant_stage()
    if dominant is not None:
        attributes["reqtrace.dominant_stage"] = dominant.name
    unobserved = sum(s.duration_ns for s in trace.stages if s.name == "unobserved")
    if unobserved:
        attributes["reqtrace.unobserved_us"] = round(unobserved / 1000, 3)
    present = {stage.name for stage in trace.stages}
    missing = [name for name in _REQUIRED_STAGES if name not in present]
    if missing:
        attributes["reqtrace.missing_stages"] = missing
    if trace.notes:
        attributes["reqtrace.notes"] = list(trace.notes)
    # (the server's pid is the resource's process.pid; its thread, thread.id of the stage
    # spans that ran on it)
    attributes["reqtrace.connection.id"] = trace.conn_id
    attributes["reqtrace.connection.request_seq"] = trace.seq
    facts = trace.connection
    for field, fact in zip(facts._fields, facts, strict=True):
        if not fact and field in _ZERO_IS_NOTHING:
            continue
        if fact is None or fact == "" or field in ("established_ns", "accepted_ns"):
            continue
        attributes[f"reqtrace.connection.{field}"] = fact
    for key, detail in trace.details.items():
        attributes[f"reqtrace.detail.{key}"] = detail
    return attributes


def redact_query(query: str) -> str:
    """The query with the values of signed-URL credentials replaced by REDACTED."""
    if not any(key in query for key in SIGNED_URL_KEYS):
        return query
    parts = []
    for part in query.split("&"):
        key, sep, _ = part.partition("=")
        parts.append(f"{key}=REDACTED" if sep and key in SIGNED_URL_KEYS else part)
    return "&".join(parts)


def _host_name(host: str) -> str:
    """The host part of a Host header ("[::1]:8000" → "::1", "api:8000" → "api")."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


# -- whole recordings ---------------------------------------------------------------------


def recording_ids(recording: Recording) -> random.Random:
    """Ids for a recording's spans, the same at every export of it (seeded by the run)."""
    header = recording.header or {}
    seed = f"{header.get('host')}|{header.get('server_pid')}|{header.get('started_unix_ns')}"
    return random.Random(f"reqtrace|{seed}|{recording.path if not header else ''}")


def clock_offset(recording: Recording) -> int | None:
    """Wall-clock minus monotonic ns of the run, from the header (None when unknown)."""
    value = (recording.header or {}).get("clock_offset_ns")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def holders_first(traces: Sequence[RequestTrace]) -> list[RequestTrace]:
    """Requests that held the loop for others first (file order otherwise), so that every
    blame link finds its holder's span."""
    holders = {entry.holder for trace in traces for entry in trace.blame if entry.holder}
    if not holders:
        return list(traces)
    return [t for t in traces if t.id in holders] + [t for t in traces if t.id not in holders]


def recording_request(
    recording: Recording,
    service_name: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> ExportTraceServiceRequest:
    """The whole recording as one OTLP ExportTraceServiceRequest.

    Raises ValueError when the header has no clock_offset_ns (times cannot be placed)."""
    offset = clock_offset(recording)
    if offset is None:
        raise ValueError(
            "the recording has no header with clock_offset_ns, so its monotonic times"
            " cannot be turned into the wall-clock times OTLP needs"
        )
    resource = otlp_resource(recording.header, service_name, attributes)
    mapper = SpanMapper(resource, offset, recording_ids(recording))
    return encode_spans(mapper.spans_of(holders_first(recording.traces)))


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def otlp_json(message: ExportTraceServiceRequest) -> dict[str, Any]:
    """The message in OTLP/JSON: the protobuf JSON mapping (lowerCamelCase keys, 64-bit
    integers as strings) with OTLP's two deviations: trace and span ids as hex strings, not
    base64, and enums as integers. What an OTLP/HTTP receiver takes as application/json."""
    from google.protobuf.json_format import MessageToDict

    document: dict[str, Any] = MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return document


def _hex_ids(obj: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex()
