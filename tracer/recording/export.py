"""`reqtrace export FILE --format perfetto|json -o OUT`: a recording in another shape.

- perfetto: Chrome/Perfetto trace-event JSON (export_perfetto.py), for ui.perfetto.dev.
- json: one plain JSON document {"schema", "header", "requests": [...], "footer",
  "problems"} for tools that want the whole recording at once instead of JSON Lines.

OUT "-" writes to standard output. Files are written like recordings (mode 0600, owned by
the invoking user under sudo): they hold the same paths and headers.
"""

from __future__ import annotations

from typing import Any

from tracer.model.trace import SCHEMA
from tracer.recording.reader import Recording

FORMATS = ("perfetto", "json")


def plain_document(recording: Recording) -> dict[str, Any]:
    """The whole recording as one JSON object."""
    return {
        "schema": SCHEMA,
        "header": recording.header,
        "requests": [trace.to_json() for trace in recording.traces],
        "footer": recording.footer,
        "problems": list(recording.problems),
    }
