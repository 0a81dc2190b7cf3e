"""The trace model: what one HTTP request's timeline is, and its JSON form.

A `RequestTrace` is the correlator's output and the unit every sink consumes: the recorder
writes one per line, the report aggregates them, the dashboard and the exporters draw them.
It is a frozen value: once the correlator has emitted a trace nothing changes it.

Which stages exist, their order and layers live in the stage registry
(tracer/model/stages.py; names are a contract: stages may be added, never renamed). Stages
of one request never overlap and never go backwards; a stage is present only when both its
ends were observed, otherwise the trace carries a note saying why it is missing.

Timestamps are CLOCK_MONOTONIC nanoseconds, the clock of bpf_ktime_get_ns() and of the
server hooks. JSON keeps them as integers so nothing is lost to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from tracer.model.stages import LAYER_OF

SCHEMA = "reqtrace.trace/1"

REQUIRED_REQUEST_KEYS = (
    "id",
    "method",
    "path",
    "status",
    "client",
    "server",
    "start_ns",
    "end_ns",
    "complete",
    "stages",
    "notes",
)

Detail = int | float | str


# Stage, ConnectionFacts and RequestTrace are immutable named tuples rather than frozen
# dataclasses: the correlator builds one trace, one set of facts and ~10 stages per request,
# and a frozen dataclass's __init__ (object.__setattr__ per field) cost more than the rest
# of building a trace. Same attribute names, methods and keyword construction; compared as
# tuples. The correlator builds them with tuple.__new__ (every field given, in order).


class Stage(NamedTuple):
    """One step of a request's timeline; both ends were observed."""

    name: str
    layer: str
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer": self.layer,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stage:
        name = _text(data, "name")
        layer = data.get("layer", LAYER_OF.get(name, ""))
        return cls(name, str(layer), _integer(data, "start_ns"), _integer(data, "end_ns"))


class Blame(NamedTuple):
    """Who held the event loop while this request waited for it, in one of its loop-wait
    stages (loop_busy, loop_queue, handoff; see tracer/correlate/loop_blame.py).

    `holder` is the id of the request whose code ran on the loop meanwhile, 0 for work that
    no single traced request held the loop for (a batch of short requests under load, other
    callbacks, garbage collection, background tasks, or a request still running when this
    one was emitted).
    """

    stage: str
    holder: int
    method: str
    path: str
    ns: int

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "holder": self.holder,
            "method": self.method,
            "path": self.path,
            "ns": self.ns,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Blame:
        return cls(
            _text(data, "stage"),
            _integer(data, "holder"),
            str(data.get("method", "")),
            str(data.get("path", "")),
            _integer(data, "ns"),
        )


class ConnectionFacts(NamedTuple):
    """What is known about the TCP connection a request travelled on, when it completed.

    None means "not observed" (the connection predates tracing, or records were lost).
    Counters cover the whole connection so far; the request's own share is in its details.
    """

    handshake_us: float | None = None  # child socket SYN_RECV -> ESTABLISHED
    accept_queue_us: float | None = None  # ESTABLISHED -> accept() returned it
    established_ns: int = 0
    accepted_ns: int = 0
    srtt_us: int | None = None  # smoothed RTT at the latest received segment
    rcv_wnd: int | None = None
    snd_wnd: int | None = None
    retransmits: int = 0
    resets: int = 0
    drops: int = 0
    requests_served: int = 0  # requests completed on this connection, this one included
    closed_by: str = ""  # "client" | "server" once one side sent its FIN

    def to_json(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConnectionFacts:
        known = {name: data[name] for name in cls._fields if name in data}
        return cls(**known)


_NO_FACTS = ConnectionFacts()


class _RequestTraceFields(NamedTuple):
    # The fields of RequestTrace, in order (RequestTrace adds a fresh `details` default).
    id: int
    pid: int
    fd: int
    conn_id: int
    seq: int
    method: str
    path: str
    status: int
    client: tuple[str, int]
    server: tuple[str, int]
    start_ns: int
    end_ns: int
    complete: bool
    stages: tuple[Stage, ...]
    notes: tuple[str, ...]
    connection: ConnectionFacts
    details: Mapping[str, Detail]
    tid: int
    query: str
    http_version: str
    outcome: str
    headers: tuple[tuple[str, str], ...]
    blame: tuple[Blame, ...]


class RequestTrace(_RequestTraceFields):
    """One HTTP request from the first kernel timestamp to the last send syscall exit.

    `details` holds extra numbers (recv/send call counts, wake-up split, ...) keyed by name;
    treat it as read-only. `headers` are the request headers the server captured (values of
    credentials are redacted by the recorder, not here).
    """

    __slots__ = ()

    def __new__(
        cls,
        id: int,
        pid: int,
        fd: int,
        conn_id: int,
        seq: int,
        method: str,
        path: str,
        status: int,
        client: tuple[str, int],
        server: tuple[str, int],
        start_ns: int,
        end_ns: int,
        complete: bool,
        stages: tuple[Stage, ...],
        notes: tuple[str, ...] = (),
        connection: ConnectionFacts = _NO_FACTS,
        details: Mapping[str, Detail] | None = None,
        tid: int = 0,
        query: str = "",
        http_version: str = "",
        outcome: str = "",
        headers: tuple[tuple[str, str], ...] = (),
        blame: tuple[Blame, ...] = (),
    ) -> RequestTrace:
        return tuple.__new__(
            cls,
            (
                id, pid, fd, conn_id, seq, method, path, status, client, server, start_ns,
                end_ns, complete, stages, notes, connection, {} if details is None else details,
                tid, query, http_version, outcome, headers, blame,
            ),
        )  # fmt: skip

    @property
    def total_ns(self) -> int:
        return self.end_ns - self.start_ns

    def stage(self, name: str) -> Stage | None:
        """The stage called `name`, or None when it was not observed."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None

    def blame_of(self, stage_name: str) -> tuple[Blame, ...]:
        """Who held the event loop during this request's `stage_name` (longest first)."""
        return tuple(entry for entry in self.blame if entry.stage == stage_name)

    def dominant_stage(self) -> Stage | None:
        """The longest stage (the first one on ties), or None when no stage was observed.

        Stages tile the request's total (gaps are `unobserved` stages), so this is the
        largest share of the request's time."""
        best: Stage | None = None
        for stage in self.stages:
            if best is None or stage.duration_ns > best.duration_ns:
                best = stage
        return best

    def to_json(self) -> dict[str, Any]:
        """The recording's request line (README "Recordings"), plus this model's extra keys."""
        out: dict[str, Any] = {
            "type": "request",
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "client": [self.client[0], self.client[1]],
            "server": [self.server[0], self.server[1]],
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "complete": self.complete,
            "stages": [stage.to_json() for stage in self.stages],
            "notes": list(self.notes),
            "pid": self.pid,
            "tid": self.tid,
            "fd": self.fd,
            "conn_id": self.conn_id,
            "seq": self.seq,
            "query": self.query,
            "http_version": self.http_version,
            "outcome": self.outcome,
            "connection": self.connection.to_json(),
            "details": dict(self.details),
        }
        if self.headers:
            out["headers"] = [[name, value] for name, value in self.headers]
        if self.blame:
            out["blame"] = [entry.to_json() for entry in self.blame]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RequestTrace:
        """Rebuild a trace from its JSON line; raises ValueError naming what is wrong."""
        missing = [key for key in REQUIRED_REQUEST_KEYS if key not in data]
        if missing:
            raise ValueError(f"request without {', '.join(missing)}")
        stages = data["stages"]
        notes = data["notes"]
        if not isinstance(stages, list) or not isinstance(notes, list):
            raise ValueError("stages and notes must be lists")
        connection = data.get("connection") or {}
        details = data.get("details") or {}
        headers = data.get("headers") or []
        blame = data.get("blame") or []
        if not isinstance(blame, list):
            raise ValueError("blame must be a list")
        if not isinstance(connection, dict) or not isinstance(details, dict):
            raise ValueError("connection and details must be objects")
        try:
            return cls(
                id=_integer(data, "id"),
                pid=int(data.get("pid", 0)),
                fd=int(data.get("fd", -1)),
                conn_id=int(data.get("conn_id", 0)),
                seq=int(data.get("seq", 0)),
                method=str(data["method"]),
                path=str(data["path"]),
                status=int(data["status"]),
                client=_endpoint(data["client"]),
                server=_endpoint(data["server"]),
                start_ns=_integer(data, "start_ns"),
                end_ns=_integer(data, "end_ns"),
                complete=bool(data["complete"]),
                stages=tuple(Stage.from_json(stage) for stage in stages),
                notes=tuple(str(note) for note in notes),
                connection=ConnectionFacts.from_json(connection),
                details=dict(details),
                tid=int(data.get("tid", 0)),
                query=str(data.get("query", "")),
                http_version=str(data.get("http_version", "")),
                outcome=str(data.get("outcome", "")),
                headers=tuple((str(name), str(value)) for name, value in headers),
                blame=tuple(Blame.from_json(entry) for entry in blame),
            )
        except KeyError as exc:
            raise ValueError(f"a stage without {exc.args[0]}") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed request: {exc}") from None


def _integer(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return value


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def _endpoint(value: Any) -> tuple[str, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"an address must be [ip, port], got {value!r}")
    return str(value[0]), int(value[1])
