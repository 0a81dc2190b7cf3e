"""reqtrace: follow one HTTP request from the network card to the ASGI app and back.

Module map. Data flows one way: probes → ring buffer → pipeline thread → correlator ←
hook channel ← server; correlator → request traces → sinks (recording, dashboard, log).
Imports point down this list only (tests/test_import_layers.py checks it, and that no
import cycle exists anywhere):

    model/       the trace model: THE stage registry (stages.py), traces, units
    records/     kernel record layout mirror of probes/events.h + decoders; hook records
    kernel/      system facts, attach trials and plan, program flags, loader, ring buffer
    correlate/   the sans-IO correlator: connections, reorder window, stage builder
    server/      the bundled ASGI server and its timing hooks (imports only records/hooks)
    hosted/      the user's own uvicorn/gunicorn with the same hooks (imports only server/)
    lab/         network namespaces, veth, delay line, shaping (`reqtrace lab`)
    recording/   recording writer/reader, raw-record log, report, JSON and Perfetto export
    session/     one `reqtrace run`: server child, pipeline thread, sinks, listener, stop
    commands/    one module per command: run/demo, doctor, report, export
    cli.py       the command table (`reqtrace --help` imports nothing heavy)
    demo/        the demo app and the bounded load generator (workloads, import nothing)

Beside tracer/: probes/ (BPF C sources, events.h, the probe catalog) at the bottom, and
dashboards/ (the Textual apps) between session/ and commands/.
"""

from __future__ import annotations

__version__ = "0.1.0"
