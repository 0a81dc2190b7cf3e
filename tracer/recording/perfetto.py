"""A recording as Chrome/Perfetto trace-event JSON (open it in ui.perfetto.dev).

Layout of the tracks:

- process "requests": one thread-like track per request (tid = request id) holding the
  whole request as a slice with its stages nested inside;
- process "server (pid N)": one track per server thread, with the work that thread did
  itself, one syscall or parse at a time (recv, parse, send);
- process "CPUs": one track per CPU with the kernel's softirq work on that CPU
  (nic_irq, softirq, ip_tcp).

Flow arrows follow each request from the kernel receive (ip_tcp on its CPU) to the read
on the server thread and on to the app slice of the request. Times are µs ("ts"/"dur" of
"X" complete events, fractional so nanoseconds survive).

Trace-event tracks must nest: on one track a slice lies inside another or after it. Two
requests' slices can overlap on a CPU or thread track (a softirq handles several packets,
for example), so per track a slice that would cross another is left out and counted in
otherData.skipped_slices; request tracks always nest (stages never overlap).
"""

from __future__ import annotations

from typing import Any

from tracer.model.stages import CPU_TRACK_STAGES, THREAD_TRACK_STAGES
from tracer.model.trace import SCHEMA, RequestTrace, Stage
from tracer.recording.reader import Recording

REQUESTS_PID = 1_000_000_001  # pseudo processes, above any real pid (pid_max <= 2^22)
CPUS_PID = 1_000_000_002
THREAD_STAGES = THREAD_TRACK_STAGES
CPU_STAGES = CPU_TRACK_STAGES

Event = dict[str, Any]
Slice = tuple[int, int, str, str, dict[str, Any]]  # start_ns, end_ns, name, category, args


def _us(ns: int) -> float:
    return ns / 1000


def perfetto_trace(recording: Recording) -> dict[str, Any]:
    """The trace-event JSON document ({"traceEvents": [...], ...}) of a recording."""
    events: list[Event] = [
        _meta("process_name", REQUESTS_PID, None, "requests"),
        _meta("process_sort_index", REQUESTS_PID, None, 0, key="sort_index"),
        _meta("process_name", CPUS_PID, None, "CPUs"),
        _meta("process_sort_index", CPUS_PID, None, 2, key="sort_index"),
    ]
    tracks: dict[tuple[int, int], list[Slice]] = {}
    named_threads: set[tuple[int, int]] = set()
    flows: list[tuple[int, list[tuple[int, int, Stage]]]] = []
    for trace in recording.traces:
        events.extend(_request_track(trace, tracks))
        hops: list[tuple[int, int, Stage]] = []
        cpu = trace.details.get("rx_cpu")
        for stage in trace.stages:
            if stage.name in CPU_STAGES and isinstance(cpu, int):
                track = (CPUS_PID, cpu)
                named_threads.add(track)
            elif stage.name in THREAD_STAGES and trace.tid:
                track = (trace.pid, trace.tid)
                named_threads.add(track)
            else:
                continue
            args = {"request": trace.id, "duration_us": _us(stage.duration_ns)}
            tracks.setdefault(track, []).append(
                (stage.start_ns, stage.end_ns, stage.name, stage.layer, args)
            )
            if stage.name in ("ip_tcp", "recv"):
                hops.append((*track, stage))
        app = trace.stage("app")
        if app is not None:
            hops.append((REQUESTS_PID, trace.id, app))
        if len(hops) >= 2:
            flows.append((trace.id, hops))

    pids = sorted({pid for pid, _ in named_threads if pid != CPUS_PID})
    for pid in pids:
        events.append(_meta("process_name", pid, None, f"server (pid {pid})"))
        events.append(_meta("process_sort_index", pid, None, 1, key="sort_index"))
    for pid, tid in sorted(named_threads):
        name = f"CPU {tid}" if pid == CPUS_PID else f"thread {tid}"
        events.append(_meta("thread_name", pid, tid, name))

    kept: set[tuple[int, int, int, int]] = set()
    skipped = 0
    for (pid, tid), slices in sorted(tracks.items()):
        nested = _nested(slices)
        skipped += len(slices) - len(nested)
        for start, end, name, category, args in nested:
            kept.add((pid, tid, start, end))
            events.append(_slice(pid, tid, start, end, name, category, args))
    for flow_id, hops in flows:
        events.extend(_flow(flow_id, hops, kept))
    events.extend(_blame_flows(recording.traces))

    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "schema": SCHEMA,
            "source": recording.path,
            "requests": len(recording.traces),
            "skipped_slices": skipped,
        },
    }


def _request_track(trace: RequestTrace, tracks: dict[tuple[int, int], list[Slice]]) -> list[Event]:
    """Name the request's track; queue its whole-request slice and its stage slices."""
    tid = trace.id
    label = f"#{trace.id} {trace.method} {trace.path} {trace.status}"
    args: dict[str, Any] = {
        "id": trace.id,
        "status": trace.status,
        "complete": trace.complete,
        "client": f"{trace.client[0]}:{trace.client[1]}",
        "total_us": _us(trace.total_ns),
        "notes": list(trace.notes),
        **trace.details,
    }
    slices = tracks.setdefault((REQUESTS_PID, tid), [])
    slices.append((trace.start_ns, trace.end_ns, label, "request", args))
    for stage in trace.stages:
        stage_args: dict[str, Any] = {"duration_us": _us(stage.duration_ns)}
        held = [
            f"{b.method} {b.path} (#{b.holder}) {_us(b.ns)} µs"
            if b.holder
            else f"other {_us(b.ns)} µs"
            for b in trace.blame_of(stage.name)
        ]
        if held:
            stage_args["loop_held_by"] = held
        slices.append((stage.start_ns, stage.end_ns, stage.name, stage.layer, stage_args))
    return [
        _meta("thread_name", REQUESTS_PID, tid, label),
        _meta("thread_sort_index", REQUESTS_PID, tid, tid, key="sort_index"),
    ]


def _nested(slices: list[Slice]) -> list[Slice]:
    """The slices of one track that nest properly (outer first on equal starts)."""
    ordered = sorted(slices, key=lambda s: (s[0], -s[1], s[2]))
    kept: list[Slice] = []
    open_ends: list[int] = []  # ends of the slices enclosing the cursor
    for item in ordered:
        start, end = item[0], item[1]
        while open_ends and open_ends[-1] <= start:
            open_ends.pop()
        if open_ends and end > open_ends[-1]:
            continue  # would cross the slice it starts in
        kept.append(item)
        open_ends.append(end)
    return kept


def _flow(flow_id: int, hops: list[tuple[int, int, Stage]], kept: set[Any]) -> list[Event]:
    """Flow events binding to the middle of each hop's slice (so they bind unambiguously)."""
    present = [
        hop
        for hop in hops
        if hop[2].duration_ns > 0 and (hop[0], hop[1], hop[2].start_ns, hop[2].end_ns) in kept
    ]
    if len(present) < 2:
        return []
    out: list[Event] = []
    for index, (pid, tid, stage) in enumerate(present):
        phase = "s" if index == 0 else "f" if index == len(present) - 1 else "t"
        event: Event = {
            "name": "request",
            "cat": "flow",
            "ph": phase,
            "id": flow_id,
            "ts": _us(stage.start_ns + stage.duration_ns // 2),
            "pid": pid,
            "tid": tid,
            "bp": "e",
        }
        out.append(event)
    return out


BLAME_FLOW_BASE = 1 << 40  # flow ids of "held the loop" arrows, apart from request ids


def _blame_flows(traces: list[RequestTrace]) -> list[Event]:
    """An arrow from each request that held the event loop to every request that waited
    for it (into the waiting stage: loop_busy, loop_queue, handoff)."""
    spans = {trace.id: (trace.start_ns, trace.end_ns) for trace in traces}
    out: list[Event] = []
    serial = 0
    for trace in traces:
        for entry in trace.blame:
            holder = spans.get(entry.holder) if entry.holder else None
            wait = trace.stage(entry.stage)
            if holder is None or wait is None or wait.duration_ns <= 0:
                continue
            low, high = max(holder[0], wait.start_ns), min(holder[1], wait.end_ns)
            if low >= high:
                continue  # the holder's span does not meet the wait: nothing to point at
            at = low  # inside both the holder's request and the wait
            serial += 1
            common = {"name": "held the loop", "cat": "loop", "id": BLAME_FLOW_BASE + serial}
            out.append(
                {**common, "ph": "s", "ts": _us(at), "pid": REQUESTS_PID, "tid": entry.holder}
            )
            out.append(
                {
                    **common,
                    "ph": "f",
                    "bp": "e",
                    "ts": _us(max(at, wait.start_ns + wait.duration_ns // 2)),
                    "pid": REQUESTS_PID,
                    "tid": trace.id,
                }
            )
    return out


def _slice(
    pid: int, tid: int, start: int, end: int, name: str, category: str, args: dict[str, Any]
) -> Event:
    return {
        "name": name,
        "cat": category or "stage",
        "ph": "X",
        "ts": _us(start),
        "dur": _us(end - start),
        "pid": pid,
        "tid": tid,
        "args": args,
    }


def _meta(name: str, pid: int, tid: int | None, value: Any, *, key: str = "name") -> Event:
    event: Event = {"name": name, "ph": "M", "pid": pid, "args": {key: value}}
    if tid is not None:
        event["tid"] = tid
    return event
