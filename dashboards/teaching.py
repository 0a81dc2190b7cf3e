"""Plain-words explanations of each stage, filled with the selected request's own numbers.

The layers follow the request's path: NIC and interrupts -> TCP/IP and the socket buffer ->
the wakeup of the server thread -> epoll and the event loop -> the recv syscall -> HTTP
parsing -> the ASGI app -> the send syscall and the device on the way back. Each entry says
what happened, what makes that stage slow in general, and what to look at or tune.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text

from dashboards.render import layer_color
from tracer.model.stages import LAYER_OF, STAGE_SPANS
from tracer.model.trace import RequestTrace, Stage
from tracer.model.units import format_duration


@dataclass(frozen=True)
class Lesson:
    title: str
    what: Callable[[RequestTrace, Stage], str]
    slow_when: str
    tune: str


def _detail(trace: RequestTrace, key: str, default: object = None) -> object:
    return trace.details.get(key, default)


def _us(value: object) -> str:
    return format_duration(float(value) * 1000) if isinstance(value, int | float) else "?"


def _nic_irq(t: RequestTrace, s: Stage) -> str:
    irq = _detail(t, "irq")
    dev, cpu = _detail(t, "rx_dev"), _detail(t, "rx_cpu")
    card = f"The network card behind {dev}" if dev else "The network card"
    where = f" on CPU {cpu}" if cpu is not None else ""
    return (
        f"{card} raised interrupt {irq if irq is not None else '?'}{where} (one of its "
        "receive queues; /proc/interrupts names it). The handler only masked the queue and "
        "scheduled the NET_RX softirq, which started "
        f"{format_duration(s.duration_ns)} later (interrupt handling plus whatever else the "
        "CPU had to finish first)."
    )


def _backlog(t: RequestTrace, s: Stage) -> str:
    dev = _detail(t, "rx_dev", "a software device")
    return (
        f"No network card here: the packet came from {dev}, so the sending CPU put it on its "
        f"per-CPU backlog queue (netif_rx). It waited {format_duration(s.duration_ns)} there "
        "until the NET_RX softirq ran and picked it up."
    )


def _softirq(t: RequestTrace, s: Stage) -> str:
    poll = _detail(t, "poll_function")
    if isinstance(poll, str):
        dev = _detail(t, "rx_dev")
        return (
            f"The NET_RX softirq ran the driver's NAPI poll, {poll}"
            f"{f' on {dev}' if dev else ''}: it took the packet off the receive ring, "
            "merged segments where it could (GRO) and handed it to the protocol stack "
            f"(netif_receive_skb), {format_duration(s.duration_ns)} after the softirq began."
        )
    return (
        "The NET_RX softirq polled the queue (NAPI) and handed the packet to the protocol "
        f"stack (netif_receive_skb) {format_duration(s.duration_ns)} after the poll began."
    )


def _ip_tcp(t: RequestTrace, s: Stage) -> str:
    segments = _detail(t, "segments", 1)
    wnd = t.connection.rcv_wnd
    return (
        f"IP and TCP processed the segment (routing, netfilter, sequence checks) and queued "
        f"its bytes on the server socket's receive buffer, then signalled it readable "
        f"(sk_data_ready): {format_duration(s.duration_ns)}. The request came in {segments} "
        f"segment(s); the receive window was {wnd if wnd is not None else '?'} bytes."
    )


def _wakeup(t: RequestTrace, s: Stage) -> str:
    wake, queue = _detail(t, "wake_path_us"), _detail(t, "run_queue_us")
    busy = _detail(t, "loop_busy_us")
    if wake is not None and queue is not None:
        split = (
            f"waking the thread took {_us(wake)}, then it waited {_us(queue)} for a CPU "
            "(scheduler run queue) before epoll_wait returned"
        )
    elif busy is not None:
        split = (
            f"the thread was not asleep: it was busy for {_us(busy)} after the data arrived "
            "and only then came back to epoll_wait"
        )
    else:
        split = "the thread was not asleep: it was busy and came back to epoll_wait later"
    return (
        f"The readable socket woke the server's event-loop thread, which sleeps in "
        f"epoll_wait when idle: {format_duration(s.duration_ns)} in all; {split}."
    )


def _event_loop(t: RequestTrace, s: Stage) -> str:
    ready = _detail(t, "epoll_ready")
    ready_text = f"{ready} file descriptor(s) were ready; " if ready is not None else ""
    return (
        f"epoll_wait returned. {ready_text}the loop ran the callbacks ahead of this socket's "
        f"before calling recv on it: {format_duration(s.duration_ns)}."
    )


def _recv(t: RequestTrace, s: Stage) -> str:
    calls, size = _detail(t, "recv_calls", 1), _detail(t, "recv_bytes", "?")
    return (
        f"The recv syscall copied the request's bytes from the socket buffer into Python's "
        f"memory: {format_duration(s.duration_ns)} for the first read ({calls} read(s), "
        f"{size} bytes in all)."
    )


def _parse(t: RequestTrace, s: Stage) -> str:
    return (
        f"The server fed the bytes to httptools until the request line and headers were "
        f"complete, then built the ASGI scope: {format_duration(s.duration_ns)}."
    )


def _body(t: RequestTrace, s: Stage) -> str:
    size = _detail(t, "request_body_bytes", 0)
    reads, segments = _detail(t, "body_recv_calls", "?"), _detail(t, "segments", "?")
    return (
        f"After the headers, the {size:,} B request body still had to cross the network and "
        f"be read: {reads} more recv call(s), {segments} TCP segment(s) in all, "
        f"{format_duration(s.duration_ns)}. The app's receive() waited for it meanwhile."
    )


def _app(t: RequestTrace, s: Stage) -> str:
    return (
        f"Your ASGI app handled {t.method} {t.path} (framework routing, middleware, reading "
        f"any body, your code) until it handed the final response body to the server: "
        f"{format_duration(s.duration_ns)}, status {t.status}."
    )


def _send(t: RequestTrace, s: Stage) -> str:
    calls, dev = _detail(t, "send_calls", 1), _detail(t, "tx_dev", "")
    device = f", and the device {dev} transmitted it" if dev else ""
    text = (
        f"The send syscall(s) ({calls}) copied the response into the socket's send buffer; "
        f"TCP built segments{device}: {format_duration(s.duration_ns)}."
    )
    after = _detail(t, "send_after_xmit_us")
    if isinstance(after, int | float) and after * 1000 > s.duration_ns / 2:
        text += (
            f" The last segment was already on its way {_us(after)} before the syscall "
            "returned: the kernel ran deferred network work (softirqs, for packets that "
            "arrived meanwhile) in this thread's time before giving it back."
        )
    return text


def holders_text(t: RequestTrace, s: Stage) -> str:
    """Who held the event loop during a loop-wait stage, from the trace's blame."""
    parts = []
    for entry in t.blame_of(s.name):
        if entry.holder:
            parts.append(
                f"{entry.method} {entry.path} (request {entry.holder}) for "
                f"{format_duration(entry.ns)}"
            )
        else:
            parts.append(f"work no traced request accounts for, {format_duration(entry.ns)}")
    if not parts:
        return "No other request's code was seen on the loop meanwhile (one loop iteration)."
    jump = " Press h to jump to it." if any(entry.holder for entry in t.blame_of(s.name)) else ""
    return "The loop was held by " + "; ".join(parts) + "." + jump


def _loop_busy(t: RequestTrace, s: Stage) -> str:
    return (
        f"The data was ready on the socket, but the event loop was not waiting in epoll: it "
        f"was running other code, and only came back to epoll {format_duration(s.duration_ns)}"
        f" later. {holders_text(t, s)}"
    )


def _startup(t: RequestTrace, s: Stage) -> str:
    return (
        "The request arrived while the app was still starting (its lifespan startup had not "
        "completed), so the connection waited in the kernel's accept queue for "
        f"{format_duration(s.duration_ns)} until the server began to accept."
    )


def _pipeline_wait(t: RequestTrace, s: Stage) -> str:
    return (
        "This request arrived in the same read as an earlier one on this connection "
        "(HTTP/1.1 pipelining); the server answers in order, so it waited "
        f"{format_duration(s.duration_ns)} behind the earlier request before parsing began."
    )


def _loop_queue(t: RequestTrace, s: Stage) -> str:
    return (
        "The server had the whole request and scheduled the app on the event loop; the app's "
        f"first step ran {format_duration(s.duration_ns)} later, once the loop got to it. "
        f"{holders_text(t, s)}"
    )


def _handoff(t: RequestTrace, s: Stage) -> str:
    return (
        "The app had handed over its last response bytes; the server's write reached the "
        f"send syscall {format_duration(s.duration_ns)} later. {holders_text(t, s)}"
    )


def _server(t: RequestTrace, s: Stage) -> str:
    reads = _detail(t, "recv_calls", 1)
    return (
        f"Between its last read of the request ({reads} read(s) in all) and the first byte of "
        f"its answer, the server worked on {t.method or 'the request'} "
        f"{t.path or ''} for {format_duration(s.duration_ns)}: parsing, your code, its "
        "database and network calls, waiting for a worker or for the interpreter. Attach "
        "mode sees the server only from the outside (its syscalls), so this is one block; "
        "`reqtrace run` splits it into parse, loop queue and app."
    )


def _unobserved(t: RequestTrace, s: Stage) -> str:
    reasons = [n.split(": ", 2)[-1] for n in t.notes if n.startswith("unobserved:")]
    why = f" Why: {reasons[0]}." if reasons else ""
    return (
        f"{format_duration(s.duration_ns)} of this request fell between two observed stages "
        f"and no probe or hook saw what happened there.{why}"
    )


LESSONS: dict[str, Lesson] = {
    "nic_irq": Lesson(
        "NIC interrupt → softirq",
        _nic_irq,
        "interrupt coalescing holds packets back on purpose; the CPU taking the interrupt is "
        "busy; interrupts of many queues land on one CPU.",
        "ethtool -c/-C (rx-usecs, adaptive coalescing); IRQ affinity or irqbalance; spread "
        "queues with RSS/RPS.",
    ),
    "backlog": Lesson(
        "backlog queue (lo, veth)",
        _backlog,
        "many packets queued at once; the softirq deferred to ksoftirqd under load; RPS "
        "moving packets to another CPU.",
        "net.core.netdev_max_backlog and dev_weight; keep the sender and receiver off "
        "overloaded CPUs.",
    ),
    "softirq": Lesson(
        "softirq / NAPI poll",
        _softirq,
        "a large poll batch ahead of this packet; GRO holding segments to merge them; the "
        "softirq running late in ksoftirqd.",
        "net.core.netdev_budget and netdev_budget_usecs; ethtool -K gro; RPS/RFS.",
    ),
    "ip_tcp": Lesson(
        "IP, TCP and the socket buffer",
        _ip_tcp,
        "long netfilter/nftables chains and conntrack; out-of-order segments; a full socket "
        "buffer (memory pressure, small window).",
        "trim firewall rules for the service port; net.ipv4.tcp_rmem; watch drops "
        "(nstat TcpExtTCPRcvQDrop).",
    ),
    "startup": Lesson(
        "the app was still starting",
        _startup,
        "slow lifespan startup: connecting to databases, loading models, warming caches; "
        "traffic sent before the server is ready (no readiness check).",
        "send traffic only once the server is ready (health checks, readiness probes); make "
        "startup lazier or faster.",
    ),
    "loop_busy": Lesson(
        "event loop busy when the data arrived",
        _loop_busy,
        "CPU-bound or blocking code in another request's handler; many ready connections "
        "served first; garbage collection; slow callbacks of background tasks.",
        "move CPU-heavy or blocking work off the loop (run_in_executor, processes); more "
        "workers; asyncio debug mode names slow callbacks (loop.slow_callback_duration).",
    ),
    "wakeup": Lesson(
        "wakeup of the server thread",
        _wakeup,
        "other runnable tasks on the CPU (run-queue delay); deep CPU idle states; cgroup CPU "
        "throttling.",
        "pin or isolate the server's CPU; check throttling (cpu.stat); bcc's runqlat shows "
        "the run-queue delay distribution.",
    ),
    "event_loop": Lesson(
        "event loop: epoll → recv",
        _event_loop,
        "callbacks of other ready connections ran first; CPU-bound code inside the loop; "
        "thousands of ready descriptors.",
        "move CPU-heavy or blocking work off the loop (threads, processes); more workers.",
    ),
    "recv": Lesson(
        "recv syscall",
        _recv,
        "large requests (copying is per byte); many small reads; page faults on fresh buffers.",
        "larger read sizes mean fewer syscalls; avoid tiny client writes (Nagle, corking).",
    ),
    "pipeline_wait": Lesson(
        "pipelined behind an earlier request",
        _pipeline_wait,
        "a slow earlier request on the same connection (HTTP/1.1 answers in order).",
        "avoid pipelining, or use more connections; speed up the request in front.",
    ),
    "parse": Lesson(
        "HTTP parsing",
        _parse,
        "very large or numerous headers; pipelined requests parsed one after another; a "
        "busy interpreter.",
        "keep headers small; uvloop/httptools are already the fast path.",
    ),
    "body": Lesson(
        "request body upload",
        _body,
        "a large upload; a slow or rate-limited client link; a small receive window "
        "(the client must wait for ACKs); packet loss and retransmits.",
        "limit body sizes; stream uploads in the app instead of buffering; net.ipv4.tcp_rmem "
        "(receive window); look at the connection's srtt and retransmits below.",
    ),
    "loop_queue": Lesson(
        "waiting for the event loop",
        _loop_queue,
        "another request's handler running CPU-bound or blocking code on the loop; a burst "
        "of requests scheduled at once; garbage collection.",
        "move CPU-heavy or blocking work off the loop; limit concurrency; more workers; the "
        "holder named here is the request to look at.",
    ),
    "app": Lesson(
        "the ASGI app",
        _app,
        "your code, database or network calls it awaits, or a blocking call inside async "
        "code (which stalls every other request on the loop).",
        "profile the endpoint (py-spy, pyinstrument); move blocking calls to a thread pool; cache.",
    ),
    "handoff": Lesson(
        "response handed over → send",
        _handoff,
        "a full send buffer (writes queued until the socket drains); the loop busy with "
        "other work before the write ran.",
        "see the send stage's buffer sizes; keep the loop free (the holder named here).",
    ),
    "server": Lesson(
        "the server's own work (attach mode)",
        _server,
        "slow application code or the calls it waits for; all workers or threads busy "
        "(requests queue inside the server); CPU-bound work holding an event loop or the GIL.",
        "profile the server (py-spy dump/top on its pid); add workers; compare with the "
        "client's latency to see how much of it is the server's.",
    ),
    "send": Lesson(
        "send syscall and transmit",
        _send,
        "large responses; a full send buffer because the client reads slowly (the loop "
        "waits for the socket to drain); traffic shaping on the device.",
        "net.ipv4.tcp_wmem / SO_SNDBUF; compress or stream large bodies; check the qdisc "
        "(tc -s qdisc).",
    ),
    "unobserved": Lesson(
        "not observed",
        _unobserved,
        "records lost (ring buffer full), a probe point this kernel cannot attach, or a "
        "connection opened before tracing began.",
        "reqtrace doctor shows which probe points attached; a larger ring buffer or lower "
        "load avoids lost records.",
    ),
}


def explain(trace: RequestTrace, stage_name: str) -> Text:
    """The teaching text for one stage of one request (or why it is missing)."""
    lesson = LESSONS.get(stage_name)
    layer = LAYER_OF.get(stage_name, "")
    text = Text()
    text.append(f"{stage_name}", style=f"bold {layer_color(layer)}")
    if lesson:
        text.append(f"  {lesson.title}", style="bold")
    text.append(f"  [{layer}] {STAGE_SPANS.get(stage_name, '')}\n", style="dim")
    stage = trace.stage(stage_name)
    if stage is None:
        # Notes read "stage[, stage]: reason"; show the reasons that name this stage.
        missing = [
            note.split(": ", 1)[-1]
            for note in trace.notes
            if stage_name in note.split(": ", 1)[0].replace(" ", "").split(",")
        ] or ["this stage was not observed for this request"]
        text.append("Not observed: " + "; ".join(missing) + "\n", style="italic")
    elif lesson:
        text.append(lesson.what(trace, stage) + "\n")
        share = stage.duration_ns / trace.total_ns * 100 if trace.total_ns else 0
        text.append(f"That is {share:.0f}% of this request's total.\n", style="dim")
    if lesson:
        text.append("Slow when: ", style="bold")
        text.append(lesson.slow_when + "\n")
        text.append("Look at / tune: ", style="bold")
        text.append(lesson.tune)
    return text


def explain_connection(trace: RequestTrace) -> Text:
    """The connection the request travelled on: handshake, accept queue, RTT, window."""
    c = trace.connection
    text = Text()
    text.append("connection  ", style="bold")
    parts = []
    if c.handshake_us is not None:
        parts.append(f"handshake {_us(c.handshake_us)} (SYN_RECV → ESTABLISHED)")
    if c.accept_queue_us is not None:
        parts.append(f"accept queue {_us(c.accept_queue_us)} (ESTABLISHED → accept returned)")
    if c.srtt_us is not None:
        parts.append(f"srtt {_us(c.srtt_us)}")
    if c.rcv_wnd is not None:
        parts.append(f"receive window {c.rcv_wnd:,} B")
    if c.retransmits:
        parts.append(f"{c.retransmits} retransmit(s)")
    parts.append(f"request {trace.seq} on connection {trace.conn_id} of pid {trace.pid}")
    text.append(" · ".join(parts))
    return text


def summary(trace: RequestTrace, stage_name: str) -> Text:
    """One line: the highlighted stage, its share of the request, and when it is slow."""
    lesson = LESSONS.get(stage_name)
    layer = LAYER_OF.get(stage_name, "")
    stage = trace.stage(stage_name)
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(stage_name, style=f"bold {layer_color(layer)}")
    if stage is None:
        text.append(" not observed for this request", style="italic")
    else:
        share = stage.duration_ns / trace.total_ns * 100 if trace.total_ns else 0
        text.append(f" {format_duration(stage.duration_ns)}, {share:.0f}% of the request", "bold")
    if lesson:
        text.append(f" · {lesson.title}", "bold")
        text.append(f" · slow when: {lesson.slow_when}")
    return text


def gap_explanation(hidden: int, received: int, interval_ms: float, rate: float) -> Text:
    """What a "more not listed" row stands for, and where to find those requests."""
    text = Text()
    text.append(f"{hidden:,} requests not listed here", style="bold")
    text.append(
        f" ({received:,} arrived in these {interval_ms:.0f} ms; about {rate:,.0f} a second "
        "now). No one can read that many lines, so the list keeps the slowest, the failed "
        "and the newest requests of every interval and counts the rest here. Every request "
        "still counts in the rate, the aggregate view (a) and the recording; a filter (/) "
        "narrows what is listed before this choice is made; ctrl+s saves what is listed."
    )
    return text
