"""THE stage registry: everything about a stage lives here, and only here.

Like h11's `_state.py`, this module is the one place that says which stages a request's
timeline can have, in which order, in which layer, what each one measures (from → to),
whether every request has it, what evidence it is built from and where the Perfetto export
draws it besides the request's own track. Every other part derives from this table or is
checked against it by tests/test_stage_registry.py:

    tracer/model/trace.py            STAGE_LAYERS / STAGE_NAMES / LAYER_OF / STAGE_SPANS
    tracer/correlate/stage_builder.py  layers of the stages it builds, rx-path stage list
    tracer/recording/perfetto.py     CPU and thread tracks
    tracer/recording/report.py       row order
    dashboards/waterfall.py          rows, optional rows
    dashboards/teaching.py           one lesson per stage (checked)
    probes/catalog.py                `feeds=` of every probe point (checked)
    README.md "The stages"           one table row per stage (checked)

Names are a contract (recordings, reports and exports carry them): stages may be added,
never renamed. Adding one means a row here, a lesson, a README row and, for a stage the
kernel probes observe, a probe point that feeds it; the registry test names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

KERNEL = "kernel"
EVENT_LOOP = "event loop"
SYSCALL = "syscall"
SERVER = "server"
APP = "app"
GAP = "unobserved"
CONNECTION = "connection"

LAYERS: tuple[str, ...] = (KERNEL, EVENT_LOOP, SYSCALL, SERVER, APP, GAP)
"""The layers a request stage can belong to, from the wire up."""

PROBES = "probes"  # built from kernel records (ring buffer)
HOOKS = "hooks"  # built from the bundled server's timing hooks
GAPS = "gaps"  # whatever lies between two observed stages (no evidence of its own)

CPU_TRACK = "cpu"  # Perfetto: also drawn on the receiving CPU's track
THREAD_TRACK = "thread"  # Perfetto: also drawn on the server thread's track


@dataclass(frozen=True, slots=True)
class StageDef:
    """One stage of a request's timeline."""

    name: str
    layer: str
    span: str  # what it measures: from → to
    evidence: str  # PROBES or HOOKS: which records its two ends come from
    optional: bool = False  # only some requests have it (a body only with an upload)
    rx_path: bool = False  # derived from the kernel receive path of the request's first read
    track: str = ""  # CPU_TRACK, THREAD_TRACK or "" (the request track only)
    loop_wait: bool = False  # a wait for the event loop: blamed on what held the loop


STAGES: tuple[StageDef, ...] = (
    StageDef(
        "nic_irq",
        KERNEL,
        "NIC hardirq → NET_RX softirq entry",
        PROBES,
        rx_path=True,
        track=CPU_TRACK,
    ),
    StageDef(
        "backlog",
        KERNEL,
        "queued on the CPU backlog (lo, veth) → NET_RX softirq entry",
        PROBES,
        rx_path=True,
    ),
    StageDef(
        "softirq",
        KERNEL,
        "softirq/NAPI poll start → netif_receive_skb",
        PROBES,
        rx_path=True,
        track=CPU_TRACK,
    ),
    StageDef(
        "ip_tcp",
        KERNEL,
        "netif_receive_skb → segment queued on the socket (sk_data_ready)",
        PROBES,
        rx_path=True,
        track=CPU_TRACK,
    ),
    StageDef(
        "startup",
        SERVER,
        "data ready while the app was still starting (lifespan) → the server began to accept",
        HOOKS,
        optional=True,
    ),
    StageDef(
        "loop_busy",
        EVENT_LOOP,
        "data ready on the socket while the loop thread ran other work → epoll returns it",
        PROBES,
        optional=True,
        loop_wait=True,
    ),
    StageDef(
        "wakeup",
        KERNEL,
        "sk_data_ready → the server thread's epoll wait returns",
        PROBES,
        rx_path=True,
    ),
    StageDef(
        "event_loop",
        EVENT_LOOP,
        "epoll return → recv syscall enter on that fd",
        PROBES,
        rx_path=True,
    ),
    StageDef(
        "recv",
        SYSCALL,
        "recv syscall enter → exit (copy to user space)",
        PROBES,
        track=THREAD_TRACK,
    ),
    StageDef(
        "pipeline_wait",
        SERVER,
        "read with an earlier request on this connection → the server starts parsing it",
        HOOKS,
        optional=True,
    ),
    StageDef("parse", SERVER, "recv exit → request headers parsed", HOOKS, track=THREAD_TRACK),
    StageDef(
        "body",
        SERVER,
        "request headers parsed → request body complete (uploads)",
        HOOKS,
        optional=True,
    ),
    StageDef(
        "loop_queue",
        EVENT_LOOP,
        "request parsed (body complete when the app waits for it) → the app's first step runs",
        HOOKS,
        optional=True,
        loop_wait=True,
    ),
    StageDef("app", APP, "ASGI app called → final response body handed to the server", HOOKS),
    StageDef(
        "handoff",
        SERVER,
        "final response handoff to the transport → the response's first send syscall",
        HOOKS,
        optional=True,
        loop_wait=True,
    ),
    StageDef(
        "server",
        SERVER,
        "the request's last recv exit → its response's first send enter (attach mode: no hooks)",
        PROBES,
        optional=True,
    ),
    StageDef(
        "send",
        SYSCALL,
        "send syscall(s) enter → exit (copy to kernel, TCP out, device xmit)",
        PROBES,
        track=THREAD_TRACK,
    ),
    StageDef(
        "unobserved",
        GAP,
        "between two observed stages, where no probe or hook saw anything (reason in notes)",
        GAPS,
        optional=True,
    ),
)
"""Every stage a request can have, in timeline order (`unobserved` may stand anywhere)."""


@dataclass(frozen=True, slots=True)
class ConnectionStageDef:
    """A stage of the connection a request travelled on (shown once per connection)."""

    name: str
    span: str


CONNECTION_STAGES: tuple[ConnectionStageDef, ...] = (
    ConnectionStageDef("handshake", "SYN_RECV → ESTABLISHED (the child socket's handshake)"),
    ConnectionStageDef("accept_queue", "ESTABLISHED → accept() returns the connection"),
)

STAGE_BY_NAME: dict[str, StageDef] = {stage.name: stage for stage in STAGES}
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
STAGE_LAYERS: tuple[tuple[str, str], ...] = tuple((stage.name, stage.layer) for stage in STAGES)
LAYER_OF: dict[str, str] = dict(STAGE_LAYERS)
STAGE_SPANS: dict[str, str] = {stage.name: stage.span for stage in STAGES}
OPTIONAL_STAGES: frozenset[str] = frozenset(stage.name for stage in STAGES if stage.optional)
RX_PATH_STAGES: tuple[str, ...] = tuple(stage.name for stage in STAGES if stage.rx_path)
CPU_TRACK_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.track == CPU_TRACK)
THREAD_TRACK_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.track == THREAD_TRACK)
CONNECTION_STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in CONNECTION_STAGES)
LOOP_WAIT_STAGES: frozenset[str] = frozenset(s.name for s in STAGES if s.loop_wait)
