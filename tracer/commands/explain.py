"""`reqtrace explain FILE [--request ID | --slowest | --path GLOB] [-o OUT.md]`: one request's
journey as a Markdown handout, for a class or a ticket.

The handout walks the request layer by layer (NIC and interrupts; TCP/IP and the socket
buffer; wakeup and epoll; the event loop; recv, parse, app and send; the connection), each
stage with this request's own numbers and the dashboard's lesson for it
(dashboards/teaching.py: what happened, when it is slow, what to look at). It opens with a
Mermaid sequence diagram (tracer/recording/explain.py) that GitHub and GitLab draw, and a
timeline table that reads the same in any Markdown viewer. A stage that was not observed
says so, with the trace's reason; time no probe or hook saw is listed as such.

Without a selector the slowest complete request is explained, and the handout says which.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from dashboards.teaching import LESSONS
from tracer.model.stages import CONNECTION_STAGES, LAYER_OF, OPTIONAL_STAGES, STAGE_SPANS
from tracer.model.trace import RequestTrace, Stage
from tracer.model.units import format_duration
from tracer.recording.explain import (
    Choice,
    NoSuchRequest,
    choose_request,
    full_path,
    sequence_diagram,
)
from tracer.recording.reader import Recording, RecordingError, load_recording
from tracer.recording.writer import write_output

# The handout's sections, from the wire up: (title, what this layer is, its stages). Every
# stage of the registry but `unobserved` is in exactly one (tests/test_explain.py checks).
SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "NIC and interrupts",
        "A frame arrives at the network card, which raises a hardware interrupt; the kernel "
        "defers the real work to the NET_RX softirq. Loopback and veth have no card: the "
        "sending CPU queues the packet on its backlog instead.",
        ("nic_irq", "backlog"),
    ),
    (
        "TCP/IP and the socket buffer",
        "The softirq polls the queue (NAPI) and walks the packet up the stack: IP routing and "
        "firewall, TCP sequence checks, then the bytes wait in the socket's receive buffer.",
        ("softirq", "ip_tcp"),
    ),
    (
        "Wakeup and epoll",
        "The socket turns readable. The server's event-loop thread sleeps in epoll_wait when "
        "idle; the kernel wakes it, and the scheduler must give it a CPU.",
        ("startup", "wakeup"),
    ),
    (
        "The event loop",
        "One thread runs every request's Python code in turn. Whatever runs on it delays "
        "everything else: these stages are waits for the loop, with who held it.",
        ("loop_busy", "event_loop", "pipeline_wait", "loop_queue", "handoff"),
    ),
    (
        "recv, parse, app, send",
        "The server reads the bytes (a syscall), parses HTTP, calls your ASGI app, and writes "
        "the response back into the kernel (another syscall).",
        ("recv", "parse", "body", "app", "server", "send"),
    ),
)


def handout(recording: Recording, choice: Choice) -> str:
    """The Markdown handout of the chosen request."""
    trace = choice.trace
    out: list[str] = []
    out += _head(recording, choice)
    out += ["## The journey at a glance", "", "```mermaid", sequence_diagram(trace) + "```", ""]
    out += _timeline(trace)
    for number, (title, intro, names) in enumerate(SECTIONS, 1):
        out += [f"## {number}. {title}", "", intro, ""]
        out += _section(trace, names)
    out += _connection(trace, len(SECTIONS) + 1)
    out += _unobserved(trace, len(SECTIONS) + 2)
    out += _notes(trace)
    return "\n".join(out).rstrip() + "\n"


def _head(recording: Recording, choice: Choice) -> list[str]:
    trace = choice.trace
    header = recording.header or {}
    source = os.path.basename(recording.path) or "a recording"
    facts = [f"`{source}`"]
    for key in ("host", "kernel", "mode", "server", "app"):
        value = header.get(key)
        if value not in (None, "", [], {}):
            facts.append(f"{key} {_inline(value)}")
    state = "complete" if trace.complete else "**incomplete** (some of it was not seen)"
    lines = [
        f"# How one request travelled: {trace.method} `{full_path(trace)}`",
        "",
        f"Request {trace.id} from {trace.client[0]}:{trace.client[1]}, request {trace.seq} on "
        f"connection {trace.conn_id}: status {trace.status}, "
        f"**{format_duration(trace.total_ns)}** from its first kernel timestamp to its last "
        f"send syscall exit; {state}.",
        "",
        f"This is {choice.why}. Source: {' · '.join(facts)}.",
        "",
    ]
    top = trace.dominant_stage()
    if top is not None and trace.total_ns:
        share = top.duration_ns / trace.total_ns
        lines += [
            f"Most of its time went to **{top.name}**: {format_duration(top.duration_ns)}, "
            f"{share:.0%} of the total.",
            "",
        ]
    return lines


def _timeline(trace: RequestTrace) -> list[str]:
    lines = [
        "| # | stage | layer | starts at | duration | share |",
        "|--:|---|---|--:|--:|--:|",
    ]
    for number, stage in enumerate(trace.stages, 1):
        lines.append(
            f"| {number} | {stage.name} | {stage.layer} | "
            f"+{format_duration(stage.start_ns - trace.start_ns)} | "
            f"{format_duration(stage.duration_ns)} | {_share(trace, stage)} |"
        )
    lines.append(f"| | **total** | | | **{format_duration(trace.total_ns)}** | 100% |")
    return [*lines, ""]


def _share(trace: RequestTrace, stage: Stage) -> str:
    if not trace.total_ns:
        return "-"
    share = stage.duration_ns / trace.total_ns
    return f"{share:.0%}" if share >= 0.01 or share == 0 else "<1%"


def _section(trace: RequestTrace, names: Iterable[str]) -> list[str]:
    lines: list[str] = []
    shown = 0
    for name in names:
        stages = [stage for stage in trace.stages if stage.name == name]
        if not stages and name in OPTIONAL_STAGES:
            continue  # it did not happen to this request (no upload, no pipelining, ...)
        shown += 1
        lesson = LESSONS.get(name)
        title = f" — {lesson.title}" if lesson else ""
        if not stages:
            lines += [
                f"### {name}{title}: not observed",
                "",
                f"*{STAGE_SPANS.get(name, '')}*",
                "",
                f"Not observed for this request: {'; '.join(missing_reasons(trace, name))}.",
                "",
            ]
            continue
        for stage in stages:
            lines += [
                f"### {name}{title}: {format_duration(stage.duration_ns)} "
                f"({_share(trace, stage)} of the request)",
                "",
                f"*{STAGE_SPANS.get(name, LAYER_OF.get(name, ''))}*",
                "",
            ]
            if lesson is not None:
                lines += [
                    lesson.what(trace, stage),
                    "",
                    f"**Slow when:** {lesson.slow_when}",
                    "",
                    f"**Look at / tune:** {lesson.tune}",
                    "",
                ]
    if not shown:
        lines += ["Nothing of this layer happened to this request.", ""]
    return lines


def missing_reasons(trace: RequestTrace, name: str) -> list[str]:
    """Why a stage is missing, from the trace's notes ("stage[, stage]: reason")."""
    reasons = [
        note.split(": ", 1)[-1]
        for note in trace.notes
        if name in note.split(": ", 1)[0].replace(" ", "").split(",")
    ]
    return reasons or ["no probe or hook recorded both of its ends (the trace has no note why)"]


def _connection(trace: RequestTrace, number: int) -> list[str]:
    c = trace.connection
    spans = {stage.name: stage.span for stage in CONNECTION_STAGES}
    lines = [
        f"## {number}. The connection",
        "",
        "Before any request, TCP's three-way handshake (SYN, SYN-ACK, ACK) creates a child "
        "socket that waits in the listener's accept queue until the server's accept() takes "
        "it. A keep-alive connection then carries many requests; it ends when one side sends "
        "FIN.",
        "",
    ]
    if c.handshake_us is not None:
        lines.append(
            f"- **handshake**: {format_duration(c.handshake_us * 1000)}, from {spans['handshake']}."
        )
    else:
        lines.append("- **handshake**: not observed (the connection predates tracing, or its "
                     "records were lost).")  # fmt: skip
    if c.accept_queue_us is not None:
        lines.append(
            f"- **accept queue**: {format_duration(c.accept_queue_us * 1000)}, from "
            f"{spans['accept_queue']}."
        )
    else:
        lines.append("- **accept queue**: not observed.")
    if trace.seq > 1:
        lines.append(
            f"- This was request {trace.seq} on connection {trace.conn_id}: the handshake "
            "and accept happened before its first request, not during this one."
        )
    rtt = f"{format_duration(c.srtt_us * 1000)}" if c.srtt_us is not None else "not observed"
    window = f"{c.rcv_wnd:,} B" if c.rcv_wnd is not None else "not observed"
    send_window = f"{c.snd_wnd:,} B" if c.snd_wnd is not None else "not observed"
    lines += [
        f"- **smoothed round-trip time** (srtt): {rtt}; receive window {window}, send window "
        f"{send_window}.",
        f"- retransmits {c.retransmits}, resets {c.resets}, drops {c.drops} on this connection "
        f"so far; {c.requests_served or trace.seq} request(s) served on it.",
    ]
    if c.closed_by:
        lines.append(f"- **teardown**: the {c.closed_by} sent FIN first and closed the connection.")
    else:
        lines.append(
            "- **teardown**: none yet: the connection was still open when this request "
            "completed (keep-alive)."
        )
    return [*lines, ""]


def _unobserved(trace: RequestTrace, number: int) -> list[str]:
    gaps = [stage for stage in trace.stages if stage.name == "unobserved"]
    lines = [f"## {number}. What nobody saw", ""]
    if not gaps:
        lines += [
            "Every nanosecond of this request between its first and last timestamp belongs to "
            "an observed stage.",
            "",
        ]
        return lines
    reasons = [note.split(": ", 1)[-1] for note in trace.notes if note.startswith("unobserved:")]
    lesson = LESSONS.get("unobserved")
    for index, gap in enumerate(gaps):
        why = reasons[index] if index < len(reasons) else "no probe or hook saw this interval"
        lines += [
            f"### unobserved: {format_duration(gap.duration_ns)} "
            f"({_share(trace, gap)} of the request)",
            "",
            f"Between {why}.",
            "",
        ]
    if lesson is not None:
        lines += [
            f"**Why time goes unobserved:** {lesson.slow_when}",
            "",
            f"**Look at:** {lesson.tune}",
            "",
        ]
    return lines


def _notes(trace: RequestTrace) -> list[str]:
    if not trace.notes:
        return []
    return [
        "## Notes of the trace",
        "",
        *(f"- {note}" for note in trace.notes),
        "",
    ]


def _inline(value: object) -> str:
    if isinstance(value, str):
        return value
    return f"`{value}`"


def run_explain(
    path: str,
    request_id: int | None = None,
    path_glob: str | None = None,
    output: str = "-",
) -> int:
    """The `reqtrace explain` command; returns the exit code."""
    try:
        recording = load_recording(path)
    except RecordingError as exc:
        print(f"reqtrace explain: {exc}", file=sys.stderr)
        return 2
    for problem in recording.problems:
        print(f"reqtrace explain: warning: {problem}", file=sys.stderr)
    try:
        choice = choose_request(recording.traces, request_id, path_glob)
    except NoSuchRequest as exc:
        print(f"reqtrace explain: {path}: {exc}", file=sys.stderr)
        return 2
    text = handout(recording, choice)
    try:
        if not write_output(output, text.encode()):
            return 0
    except OSError as exc:
        print(f"reqtrace explain: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"reqtrace explain: wrote request {choice.trace.id} ({choice.why}) to {output}",
        file=sys.stderr,
    )
    return 0


def explain_command(args: argparse.Namespace) -> int:
    return run_explain(args.file, args.request, args.path, args.output)
