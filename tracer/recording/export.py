"""Plain JSON export: the whole recording as one document, for tools that want it at once.

- perfetto: Chrome/Perfetto trace-event JSON (perfetto.py), for ui.perfetto.dev.
- json: one plain JSON document {"schema", "header", "requests": [...], "footer",
  "problems"} instead of JSON Lines.
- otlp: OpenTelemetry spans (otlp.py) as an OTLP ExportTraceServiceRequest: protobuf
  binary, or its OTLP/JSON form for an OUT ending in .json (or "-", standard output).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tracer.model.trace import SCHEMA
from tracer.recording.reader import Recording

FORMATS = ("perfetto", "json", "otlp")

OTLP_PACKAGES_MISSING = (
    "OTLP export needs the OpenTelemetry packages: pip install 'reqtrace[otlp]'"
    " (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http, opentelemetry-proto)"
)


def parse_resource_attributes(pairs: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE strings (--otlp-resource) as a dict; ValueError names a bad one."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--otlp-resource {pair!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def otlp_as_json(out: str) -> bool:
    """OTLP files: OTLP/JSON for OUT ending in .json or "-" (a terminal), else protobuf."""
    return out == "-" or out.lower().endswith(".json")


def plain_document(recording: Recording) -> dict[str, Any]:
    """The whole recording as one JSON object."""
    return {
        "schema": SCHEMA,
        "header": recording.header,
        "requests": [trace.to_json() for trace in recording.traces],
        "footer": recording.footer,
        "problems": list(recording.problems),
    }
