"""`reqtrace export FILE --format perfetto|json|otlp -o OUT`: a recording in another shape.

OUT "-" writes to standard output. OTLP: protobuf (ExportTraceServiceRequest) unless OUT
ends in .json or is "-" (then OTLP/JSON); --otlp-service-name and --otlp-resource KEY=VALUE
set the spans' resource. Files are written like recordings (mode 0600, owned by
the invoking user under sudo): they hold the same paths and headers.
"""

from __future__ import annotations

import argparse
import json
import sys

from tracer.recording.export import (
    FORMATS,
    OTLP_PACKAGES_MISSING,
    otlp_as_json,
    parse_resource_attributes,
    plain_document,
)
from tracer.recording.perfetto import perfetto_trace
from tracer.recording.reader import Recording, RecordingError, load_recording
from tracer.recording.writer import write_output


def run_export(
    path: str,
    fmt: str,
    out: str,
    service_name: str | None = None,
    resource: list[str] | None = None,
) -> int:
    """The `reqtrace export` command; returns the exit code."""
    if fmt not in FORMATS:
        print(
            f"reqtrace export: unknown format {fmt!r} (choose {', '.join(FORMATS)})",
            file=sys.stderr,
        )
        return 2
    try:
        recording = load_recording(path)
    except RecordingError as exc:
        print(f"reqtrace export: {exc}", file=sys.stderr)
        return 2
    for problem in recording.problems:
        print(f"reqtrace export: warning: {problem}", file=sys.stderr)
    if fmt == "otlp":
        try:
            data = _otlp_bytes(recording, out, service_name, resource or [])
        except ValueError as exc:
            print(f"reqtrace export: {exc}", file=sys.stderr)
            return 2
    else:
        document = perfetto_trace(recording) if fmt == "perfetto" else plain_document(recording)
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    try:
        if not write_output(out, data):
            return 0
    except OSError as exc:
        print(f"reqtrace export: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    count = len(recording.traces)
    noun = "request" if count == 1 else "requests"
    print(f"reqtrace export: wrote {count} {noun} to {out}", file=sys.stderr)
    return 0


def _otlp_bytes(
    recording: Recording, out: str, service_name: str | None, resource: list[str]
) -> bytes:
    """The recording's spans as OTLP protobuf or OTLP/JSON; ValueError says what is wrong."""
    try:
        from tracer.recording.otlp import otlp_json, recording_request
    except ImportError:
        raise ValueError(OTLP_PACKAGES_MISSING) from None
    attributes = parse_resource_attributes(resource)
    message = recording_request(recording, service_name, attributes)
    if otlp_as_json(out):
        return json.dumps(otlp_json(message), ensure_ascii=False).encode() + b"\n"
    return bytes(message.SerializeToString())


def export_command(args: argparse.Namespace) -> int:
    return run_export(
        args.file,
        args.format,
        args.output,
        getattr(args, "otlp_service_name", None),
        getattr(args, "otlp_resource", None),
    )
