"""The parts of `reqtrace explain` that need no teaching text: which request to explain, and
its journey as a Mermaid `sequenceDiagram` whose notes carry the measured durations.

The handout itself (tracer/commands/explain.py) adds the per-stage lessons of
dashboards/teaching.py, which this layer may not import.

Theory of the diagram: six participants, from the wire up (Client, NIC, Kernel, Event loop,
Server, App). Every stage of the request has an *actor*, the participant doing the work or
holding the request during it (`STAGE_ACTORS`, checked against the stage registry by
tests/test_explain.py). The stages are drawn in timeline order: when the actor changes, an
arrow hands the request over (labelled with what crosses: "socket readable", "recv()",
"app(scope, receive, send)" ...); then one note over the actor (and the participant the
stage reaches into, e.g. a syscall spans Event loop and Kernel) says "NAME DURATION". An
`unobserved` gap gets its note where the request was when nobody saw it. The connection's
handshake and accept queue, when observed, come first; the response goes back to the Client
last, with the way the connection ended (ConnectionFacts.closed_by) when it had.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from tracer.model.stages import APP, EVENT_LOOP, GAP, KERNEL, SERVER, SYSCALL
from tracer.model.trace import RequestTrace, Stage
from tracer.model.units import format_duration

# -- choosing the request --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Choice:
    """The request to explain, and a sentence saying why this one."""

    trace: RequestTrace
    why: str


class NoSuchRequest(LookupError):
    """The selector matched no request; the message says so in one sentence."""


def full_path(trace: RequestTrace) -> str:
    """The request target as the client sent it: path, and ?query when there was one."""
    return trace.path + (f"?{trace.query}" if trace.query else "")


def choose_request(
    traces: Sequence[RequestTrace], request_id: int | None = None, path: str | None = None
) -> Choice:
    """The request with `request_id`; else the slowest complete request (of those whose path,
    or path?query, matches the glob `path`); an incomplete one only when no request is
    complete, and then the reason says so."""
    if not traces:
        raise NoSuchRequest("the recording holds no requests")
    if request_id is not None:
        for trace in traces:
            if trace.id == request_id:
                return Choice(trace, f"request {request_id}, as asked")
        low, high = min(t.id for t in traces), max(t.id for t in traces)
        raise NoSuchRequest(f"no request has id {request_id} (ids run from {low} to {high})")
    pool = list(traces)
    scope = f"the {len(pool):,} in the recording"
    if path is not None:
        pool = [
            t
            for t in traces
            if fnmatch.fnmatchcase(t.path, path) or fnmatch.fnmatchcase(full_path(t), path)
        ]
        if not pool:
            raise NoSuchRequest(f"no request's path matches {path!r}")
        scope = f"the {len(pool):,} whose path matches {path}"
    complete = [t for t in pool if t.complete]
    best = max(complete or pool, key=lambda t: (t.total_ns, -t.id))
    if complete:
        return Choice(best, f"the slowest complete request of {scope}")
    return Choice(best, f"the slowest request of {scope} (none of them is complete)")


# -- the sequence diagram ---------------------------------------------------------------------

CLIENT, NIC, KERNEL_P, LOOP, SERVER_P, APP_P = "C", "N", "K", "L", "S", "A"
PARTICIPANTS: tuple[tuple[str, str], ...] = (
    (CLIENT, "Client"),
    (NIC, "NIC"),
    (KERNEL_P, "Kernel"),
    (LOOP, "Event loop"),
    (SERVER_P, "Server"),
    (APP_P, "App"),
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Where a stage is drawn: its actor, the other end of its note (or ""), and the label
    of the arrow that hands the request to the actor when it came from elsewhere."""

    actor: str
    reaches: str
    handover: str


STAGE_ACTORS: dict[str, Actor] = {
    "nic_irq": Actor(NIC, "", "frame"),
    "backlog": Actor(KERNEL_P, "", "packet (netif_rx)"),
    "softirq": Actor(KERNEL_P, "", "NET_RX softirq"),
    "ip_tcp": Actor(KERNEL_P, "", "netif_receive_skb"),
    "startup": Actor(KERNEL_P, SERVER_P, "accept queue"),
    "loop_busy": Actor(LOOP, KERNEL_P, "socket readable"),
    "wakeup": Actor(LOOP, KERNEL_P, "socket readable"),
    "event_loop": Actor(LOOP, "", "epoll_wait returns"),
    "recv": Actor(KERNEL_P, LOOP, "recv()"),
    "pipeline_wait": Actor(SERVER_P, "", "request bytes"),
    "parse": Actor(SERVER_P, "", "request bytes"),
    "body": Actor(SERVER_P, KERNEL_P, "more recv()"),
    "loop_queue": Actor(LOOP, SERVER_P, "app task scheduled"),
    "app": Actor(APP_P, "", "app(scope, receive, send)"),
    "handoff": Actor(SERVER_P, LOOP, "response body"),
    "server": Actor(SERVER_P, "", "request bytes"),
    "send": Actor(KERNEL_P, SERVER_P, "send()"),
}
"""Every request stage but `unobserved` (drawn where the request was at the time)."""

LAYER_ACTORS: dict[str, str] = {
    KERNEL: KERNEL_P,
    EVENT_LOOP: LOOP,
    SYSCALL: KERNEL_P,
    SERVER: SERVER_P,
    APP: APP_P,
}  # stages the registry may gain later: drawn by their layer


_MERMAID_CODES = str.maketrans({"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;"})


def mermaid_text(text: str) -> str:
    """Text safe in a Mermaid message or note: one line, and the characters Mermaid reads
    as syntax (# entity codes, ; statement ends, < > html) written as entity codes."""
    return " ".join(text.split()).translate(_MERMAID_CODES)


def stage_note(stage: Stage) -> str:
    """The text of a stage's note: its name and measured duration."""
    return f"{stage.name} {format_duration(stage.duration_ns)}"


def _actor_of(stage: Stage, previous: str) -> Actor:
    known = STAGE_ACTORS.get(stage.name)
    if known is not None:
        return known
    if stage.layer == GAP or stage.layer not in LAYER_ACTORS:
        return Actor(previous, "", "")
    return Actor(LAYER_ACTORS[stage.layer], "", stage.name)


def sequence_diagram(trace: RequestTrace) -> str:
    """The request's journey as Mermaid `sequenceDiagram` source (no fence)."""
    lines = ["sequenceDiagram"]
    lines += [f"    participant {key} as {name}" for key, name in PARTICIPANTS]
    connection = trace.connection
    if trace.seq <= 1 and connection.handshake_us is not None:
        lines.append(f"    {CLIENT}->>{KERNEL_P}: SYN")
        lines.append(f"    {KERNEL_P}-->>{CLIENT}: SYN-ACK")
        lines.append(f"    {CLIENT}->>{KERNEL_P}: ACK")
        handshake = format_duration(connection.handshake_us * 1000)
        lines.append(f"    Note over {CLIENT},{KERNEL_P}: handshake {handshake}")
    elif connection.handshake_us is not None:
        handshake = format_duration(connection.handshake_us * 1000)
        note = f"connection {trace.conn_id} opened earlier (handshake {handshake}), "
        note += f"this is its request {trace.seq}"
        lines.append(f"    Note over {CLIENT},{KERNEL_P}: {mermaid_text(note)}")
    if trace.seq <= 1 and connection.accept_queue_us is not None:
        lines.append(f"    {LOOP}->>{KERNEL_P}: accept()")
        queued = format_duration(connection.accept_queue_us * 1000)
        lines.append(f"    Note over {KERNEL_P},{LOOP}: accept queue {queued}")

    request = mermaid_text(f"{trace.method} {full_path(trace)}")
    where = CLIENT
    for stage in trace.stages:
        actor = _actor_of(stage, KERNEL_P if where == CLIENT else where)
        if where == CLIENT:
            first = NIC if actor.actor == NIC else KERNEL_P
            lines.append(f"    {CLIENT}->>{first}: {request}")
            where = first
        if actor.actor != where:
            lines.append(f"    {where}->>{actor.actor}: {mermaid_text(actor.handover)}")
            where = actor.actor
        over = f"{actor.actor},{actor.reaches}" if actor.reaches else actor.actor
        note = stage_note(stage)
        for entry in trace.blame_of(stage.name)[:2]:
            holder = (
                f"{entry.method} {entry.path} (request {entry.holder})"
                if entry.holder
                else "other work"
            )
            note += f"<br/>loop held by {holder} {format_duration(entry.ns)}"
        lines.append(f"    Note over {over}: {_note_text(note)}")
    if where == CLIENT:  # no stage at all
        lines.append(f"    {CLIENT}->>{KERNEL_P}: {request}")
        where = KERNEL_P
    if where != KERNEL_P:
        lines.append(f"    {where}->>{KERNEL_P}: send()")
    status = f"HTTP {trace.status}" if trace.status else "no response"
    lines.append(f"    {KERNEL_P}-->>{CLIENT}: {mermaid_text(status)}")
    if connection.closed_by == "client":
        lines.append(f"    {CLIENT}->>{KERNEL_P}: FIN (the client closed the connection)")
    elif connection.closed_by == "server":
        lines.append(f"    {KERNEL_P}->>{CLIENT}: FIN (the server closed the connection)")
    return "\n".join(lines) + "\n"


def _note_text(note: str) -> str:
    """A note with its <br/> line breaks kept and everything else made safe."""
    return "<br/>".join(mermaid_text(part) for part in note.split("<br/>"))
