"""Plain JSON export: the whole recording as one document, for tools that want it at once.

- perfetto: Chrome/Perfetto trace-event JSON (perfetto.py), for ui.perfetto.dev.
- json: one plain JSON document {"schema", "header", "requests": [...], "footer",
  "problems"} instead of JSON Lines.
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
