"""Kernel records: the Python mirror of probes/events.h and their decoded form.

The ctypes structures below are the mirror (tests/test_records_layout.py checks every size
and offset against what BCC compiles from events.h). Decoding uses struct formats derived
from those ctypes layouts, because struct.unpack_from is several times faster than ctypes
attribute access and this path runs for every record.

Decoded records are small immutable named tuples: what the correlator consumes, what
raw-record files store (as JSON, see to_json/from_json) and what tests build by hand.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from typing import Any, NamedTuple

# ---- constants of events.h --------------------------------------------------------------

RT_IFNAMSIZ = 16
RT_ADDR_LEN = 16

RT_REC_RECV = 1
RT_REC_SEND = 2
RT_REC_ACCEPT = 3
RT_REC_STATE = 4
RT_REC_RETRANSMIT = 5
RT_REC_RESET = 6
RT_REC_DROP = 7
RT_REC_RECV_HEAD = 8
RT_REC_SEND_HEAD = 9
RT_REC_TYPES = 10

RECORD_TYPE_NAMES = {
    RT_REC_RECV: "recv",
    RT_REC_SEND: "send",
    RT_REC_ACCEPT: "accept",
    RT_REC_STATE: "state",
    RT_REC_RETRANSMIT: "retransmit",
    RT_REC_RESET: "reset",
    RT_REC_DROP: "drop",
    RT_REC_RECV_HEAD: "recv_head",
    RT_REC_SEND_HEAD: "send_head",
}

RT_RX_VALID = 1 << 0
RT_RX_FROM_HARDIRQ = 1 << 1
RT_RX_BACKLOG = 1 << 2
RT_RX_SKB_SEEN = 1 << 3
RT_RX_PROCESS_CONTEXT = 1 << 4
RT_RX_DATA_READY = 1 << 5
RT_RX_DRIVER_POLL = 1 << 6

RT_TX_XMIT_SEEN = 1 << 0

RT_RESET_SENT = 0
RT_RESET_RECEIVED = 1

RT_DROP_KFREE_SKB = 0
RT_DROP_RCVQUEUE_FULL = 1

RT_MECH_TRACEPOINT = 1  # how a probe point is attached (RT_<POINT> at compile time)
RT_MECH_RAW_TRACEPOINT = 2
RT_MECH_FENTRY = 3
RT_MECH_KPROBE = 4

RT_CFG_FILTER_TGID = 1 << 0
RT_CFG_FILTER_PORT = 1 << 1
RT_CFG_ENABLED = 1 << 2
RT_CFG_CAPTURE_HEAD = 1 << 3

RT_HEAD_BYTES = 96  # first bytes of a request an RT_REC_RECV_HEAD carries, at most
RT_STATUS_BYTES = 16  # first bytes of a response an RT_REC_SEND_HEAD carries, at most

# include/net/tcp_states.h
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}

# ---- the ctypes mirror --------------------------------------------------------------------

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
s32 = ctypes.c_int32


class RtHead(ctypes.Structure):
    _fields_ = [("ts_ns", u64), ("type", u32), ("cpu", u32), ("tgid", u32), ("tid", u32)]


class RtSock(ctypes.Structure):
    _fields_ = [
        ("sk", u64),
        ("cookie", u64),
        ("laddr", u8 * RT_ADDR_LEN),
        ("raddr", u8 * RT_ADDR_LEN),
        ("lport", u16),
        ("rport", u16),
        ("family", u16),
        ("_pad", u16),
    ]


class RtRxPath(ctypes.Structure):
    _fields_ = [
        ("hardirq_ts", u64),
        ("softirq_raise_ts", u64),
        ("softirq_entry_ts", u64),
        ("poll_start_ts", u64),
        ("netif_rx_ts", u64),
        ("netif_receive_ts", u64),
        ("tcp_ts", u64),
        ("last_tcp_ts", u64),
        ("data_ready_ts", u64),
        ("segments", u32),
        ("bytes", u32),
        ("irq", u32),
        ("rx_cpu", u32),
        ("srtt_us", u32),
        ("rcv_wnd", u32),
        ("snd_wnd", u32),
        ("flags", u32),
        ("dev", ctypes.c_char * RT_IFNAMSIZ),
    ]


class RtRecv(ctypes.Structure):
    _fields_ = [
        ("head", RtHead),
        ("sock", RtSock),
        ("fd", s32),
        ("ret", s32),
        ("enter_ts", u64),
        ("epoll_enter_ts", u64),
        ("epoll_exit_ts", u64),
        ("wakeup_ts", u64),
        ("epoll_ready", s32),
        ("syscall", u32),
        ("waker_cpu", u32),
        ("_pad", u32),
        ("rx", RtRxPath),
    ]


class RtRecvHead(ctypes.Structure):
    _fields_ = [
        ("recv", RtRecv),
        ("head_len", u32),
        ("_pad", u32),
        ("data", ctypes.c_char * RT_HEAD_BYTES),
    ]


class RtSend(ctypes.Structure):
    _fields_ = [
        ("head", RtHead),
        ("sock", RtSock),
        ("fd", s32),
        ("ret", s32),
        ("enter_ts", u64),
        ("xmit_first_ts", u64),
        ("xmit_last_ts", u64),
        ("xmit_count", u32),
        ("xmit_bytes", u32),
        ("xmit_rc", s32),
        ("syscall", u32),
        ("flags", u32),
        ("_pad", u32),
        ("dev", ctypes.c_char * RT_IFNAMSIZ),
    ]


class RtSendHead(ctypes.Structure):
    _fields_ = [
        ("send", RtSend),
        ("head_len", u32),
        ("_pad", u32),
        ("data", ctypes.c_char * RT_STATUS_BYTES),
    ]


class RtAccept(ctypes.Structure):
    _fields_ = [
        ("head", RtHead),
        ("fd", s32),
        ("listen_fd", s32),
        ("enter_ts", u64),
        ("syscall", u32),
        ("_pad", u32),
    ]


class RtState(ctypes.Structure):
    _fields_ = [
        ("head", RtHead),
        ("sock", RtSock),
        ("oldstate", s32),
        ("newstate", s32),
        ("syn_recv_ts", u64),
        ("fd", s32),
        ("_pad", u32),
    ]


class RtRetransmit(ctypes.Structure):
    _fields_ = [("head", RtHead), ("sock", RtSock), ("state", s32), ("err", s32)]


class RtReset(ctypes.Structure):
    _fields_ = [
        ("head", RtHead),
        ("sock", RtSock),
        ("direction", u32),
        ("state", s32),
        ("reason", u32),
        ("_pad", u32),
    ]


class RtDrop(ctypes.Structure):
    _fields_ = [
        ("head", RtHead),
        ("sock", RtSock),
        ("location", u64),
        ("kind", u32),
        ("reason", u32),
        ("rmem_alloc", s32),
        ("sk_rcvbuf", s32),
    ]


RT_MAX_TARGETS = 8


class RtConfig(ctypes.Structure):
    _fields_ = [
        ("flags", u32),
        ("wakeup_every", u32),
        ("tgid_count", u32),
        ("port_count", u32),
        ("tgids", u32 * RT_MAX_TARGETS),
        ("ports", u16 * RT_MAX_TARGETS),
    ]


MIRROR: dict[str, type[ctypes.Structure]] = {
    "rt_head": RtHead,
    "rt_sock": RtSock,
    "rt_rx_path": RtRxPath,
    "rt_recv": RtRecv,
    "rt_recv_head": RtRecvHead,
    "rt_send": RtSend,
    "rt_send_head": RtSendHead,
    "rt_accept": RtAccept,
    "rt_state": RtState,
    "rt_retransmit": RtRetransmit,
    "rt_reset": RtReset,
    "rt_drop": RtDrop,
    "rt_config": RtConfig,
}

# ---- decoded records ------------------------------------------------------------------
#
# Immutable named tuples rather than frozen dataclasses: the consumer builds one per record
# at tens of thousands per second, and a frozen dataclass's __init__ (object.__setattr__ per
# field) cost more than everything else in the decoder. Same names, same field order, same
# attribute access; records are compared and hashed as tuples.


class SocketId(NamedTuple):
    """A server-side TCP socket: kernel address (opaque id), cookie and 4-tuple."""

    sk: int
    cookie: int
    family: int
    laddr: str
    lport: int
    raddr: str
    rport: int


class RxPath(NamedTuple):
    """How the bytes a recv returned got to the socket (first segment since the last recv)."""

    hardirq_ts: int
    softirq_raise_ts: int
    softirq_entry_ts: int
    poll_start_ts: int
    netif_rx_ts: int
    netif_receive_ts: int
    tcp_ts: int
    last_tcp_ts: int
    data_ready_ts: int
    segments: int
    bytes: int
    irq: int
    rx_cpu: int
    srtt_us: int
    rcv_wnd: int
    snd_wnd: int
    flags: int
    dev: str

    @property
    def from_hardirq(self) -> bool:
        return bool(self.flags & RT_RX_FROM_HARDIRQ)

    @property
    def via_backlog(self) -> bool:
        return bool(self.flags & RT_RX_BACKLOG)

    @property
    def process_context(self) -> bool:
        return bool(self.flags & RT_RX_PROCESS_CONTEXT)


class RecvRecord(NamedTuple):
    ts_ns: int  # syscall exit
    cpu: int
    pid: int
    tid: int
    sock: SocketId
    fd: int
    ret: int
    enter_ts: int
    epoll_enter_ts: int
    epoll_exit_ts: int
    wakeup_ts: int
    epoll_ready: int
    syscall: int
    waker_cpu: int
    rx: RxPath | None  # None when no data segment arrived since the previous recv
    # The first bytes it read (up to RT_HEAD_BYTES), only when the kernel captured them: the
    # first read of a request in attach mode (RT_REC_RECV_HEAD). Empty otherwise.
    head: bytes = b""


class SendRecord(NamedTuple):
    ts_ns: int  # syscall exit
    cpu: int
    pid: int
    tid: int
    sock: SocketId
    fd: int
    ret: int
    enter_ts: int
    xmit_first_ts: int
    xmit_last_ts: int
    xmit_count: int
    xmit_bytes: int
    xmit_rc: int
    syscall: int
    flags: int
    dev: str
    # The first bytes it wrote (up to RT_STATUS_BYTES: the status line), only when the kernel
    # captured them: the first send of a response in attach mode (RT_REC_SEND_HEAD).
    head: bytes = b""


class AcceptRecord(NamedTuple):
    ts_ns: int
    cpu: int
    pid: int
    tid: int
    fd: int
    listen_fd: int
    enter_ts: int
    syscall: int


class StateRecord(NamedTuple):
    ts_ns: int
    cpu: int
    pid: int
    tid: int
    sock: SocketId
    oldstate: int
    newstate: int
    syn_recv_ts: int
    fd: int

    @property
    def transition(self) -> str:
        return f"{TCP_STATES.get(self.oldstate, self.oldstate)}->" + str(
            TCP_STATES.get(self.newstate, self.newstate)
        )


class RetransmitRecord(NamedTuple):
    ts_ns: int
    cpu: int
    pid: int
    tid: int
    sock: SocketId
    state: int
    err: int


class ResetRecord(NamedTuple):
    ts_ns: int
    cpu: int
    pid: int
    tid: int
    sock: SocketId
    direction: int
    state: int
    reason: int


class DropRecord(NamedTuple):
    ts_ns: int
    cpu: int
    pid: int
    tid: int
    sock: SocketId
    location: int
    drop_kind: int  # RT_DROP_*: rt_drop.kind (not `kind`: that names the record in JSON)
    reason: int
    rmem_alloc: int
    sk_rcvbuf: int


KernelRecord = (
    RecvRecord
    | SendRecord
    | AcceptRecord
    | StateRecord
    | RetransmitRecord
    | ResetRecord
    | DropRecord
)

# ---- decoding --------------------------------------------------------------------------

_SCALAR_FORMATS: dict[type, str] = {
    ctypes.c_uint8: "B",
    ctypes.c_uint16: "H",
    ctypes.c_uint32: "I",
    ctypes.c_uint64: "Q",
    ctypes.c_int32: "i",
    ctypes.c_int64: "q",
}


def flat_format(ctype: type[ctypes.Structure]) -> tuple[str, list[str]]:
    """A little-endian struct format and dotted field names that mirror a ctypes layout.

    Byte and char arrays become one bytes value; padding between fields becomes 'x'.
    """
    parts: list[str] = []
    names: list[str] = []
    cursor = 0

    def walk(structure: type[ctypes.Structure], base: int, prefix: str) -> None:
        nonlocal cursor
        for entry in structure._fields_:
            name, field_type = entry[0], entry[1]  # (name, type[, bit width])
            offset = base + getattr(structure, name).offset
            if offset > cursor:
                parts.append(f"{offset - cursor}x")
                cursor = offset
            if isinstance(field_type, type) and issubclass(field_type, ctypes.Structure):
                walk(field_type, offset, f"{prefix}{name}.")
                continue
            size = ctypes.sizeof(field_type)
            if issubclass(field_type, ctypes.Array):
                parts.append(f"{size}s")
            else:
                parts.append(_SCALAR_FORMATS[field_type])
            names.append(prefix + name)
            cursor = offset + size

    walk(ctype, 0, "")
    if ctypes.sizeof(ctype) > cursor:
        parts.append(f"{ctypes.sizeof(ctype) - cursor}x")
    return "<" + "".join(parts), names


def _decoder(ctype: type[ctypes.Structure]) -> tuple[struct.Struct, dict[str, int]]:
    fmt, names = flat_format(ctype)
    compiled = struct.Struct(fmt)
    assert compiled.size == ctypes.sizeof(ctype), (ctype, compiled.size)
    return compiled, {name: i for i, name in enumerate(names)}


def format_address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        address = ipaddress.IPv6Address(raw)
        return str(address.ipv4_mapped or address)
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    return ""


_socket_cache: dict[tuple[Any, ...], SocketId] = {}


def _socket(key: tuple[Any, ...]) -> SocketId:
    """SocketId from (sk, cookie, laddr, raddr, lport, rport, family) as unpacked.

    Sockets repeat in every record of a connection: decode each identity once.
    """
    sock = _socket_cache.get(key)
    if sock is None:
        if len(_socket_cache) > 65536:
            _socket_cache.clear()
        sk, cookie, laddr, raddr, lport, rport, family = key
        sock = SocketId(
            sk,
            cookie,
            family,
            format_address(family, laddr),
            lport,
            format_address(family, raddr),
            rport,
        )
        _socket_cache[key] = sock
    return sock


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


_new = tuple.__new__


class _Layout:
    """Where each decoded field sits in the flat tuple struct.unpack_from returns."""

    def __init__(self, ctype: type[ctypes.Structure]) -> None:
        self.struct, self.at = _decoder(ctype)
        self.unpack = self.struct.unpack_from
        self.size = self.struct.size

    def span(self, first: str, last: str) -> slice:
        return slice(self.at[first], self.at[last] + 1)

    def sock(self) -> slice:
        start = self.at["sock.sk"]
        return slice(start, start + 7)


_RECV = _Layout(RtRecv)
_SEND = _Layout(RtSend)
_ACCEPT = _Layout(RtAccept)
_STATE = _Layout(RtState)
_RETRANSMIT = _Layout(RtRetransmit)
_RESET = _Layout(RtReset)
_DROP = _Layout(RtDrop)

_RECV_SOCK, _RECV_MID = _RECV.sock(), _RECV.span("fd", "ret")
_RECV_TIMES = _RECV.span("enter_ts", "wakeup_ts")
_RECV_TAIL = _RECV.span("epoll_ready", "waker_cpu")
_RX = _RECV.span("rx.hardirq_ts", "rx.flags")
_RX_FLAGS, _RX_DEV = _RECV.at["rx.flags"], _RECV.at["rx.dev"]


def _decode_recv(data: bytes, head: bytes = b"") -> RecvRecord:
    v = _RECV.unpack(data)
    rx = None
    if v[_RX_FLAGS] & RT_RX_VALID:
        rx = _new(RxPath, (*v[_RX], _text(v[_RX_DEV])))
    return _new(
        RecvRecord,
        (
            v[0], v[2], v[3], v[4], _socket(v[_RECV_SOCK]),
            *v[_RECV_MID], *v[_RECV_TIMES], *v[_RECV_TAIL], rx, head,
        ),
    )  # fmt: skip


_HEAD_LEN = struct.Struct("<I")
_HEAD_AT = RtRecvHead.head_len.offset
_DATA_AT = RtRecvHead.data.offset


def _decode_recv_head(data: bytes) -> RecvRecord:
    length = min(_HEAD_LEN.unpack_from(data, _HEAD_AT)[0], RT_HEAD_BYTES)
    return _decode_recv(data, bytes(data[_DATA_AT : _DATA_AT + length]))


_SEND_SOCK, _SEND_MID, _SEND_DEV = _SEND.sock(), _SEND.span("fd", "flags"), _SEND.at["dev"]


def _decode_send(data: bytes, head: bytes = b"") -> SendRecord:
    v = _SEND.unpack(data)
    return _new(
        SendRecord,
        (
            v[0], v[2], v[3], v[4], _socket(v[_SEND_SOCK]), *v[_SEND_MID],
            _text(v[_SEND_DEV]), head,
        ),
    )  # fmt: skip


_SEND_HEAD_AT = RtSendHead.head_len.offset
_SEND_DATA_AT = RtSendHead.data.offset


def _decode_send_head(data: bytes) -> SendRecord:
    length = min(_HEAD_LEN.unpack_from(data, _SEND_HEAD_AT)[0], RT_STATUS_BYTES)
    return _decode_send(data, bytes(data[_SEND_DATA_AT : _SEND_DATA_AT + length]))


_ACCEPT_MID = _ACCEPT.span("fd", "syscall")


def _decode_accept(data: bytes) -> AcceptRecord:
    v = _ACCEPT.unpack(data)
    return _new(AcceptRecord, (v[0], v[2], v[3], v[4], *v[_ACCEPT_MID]))


def _with_socket(layout: _Layout, cls: type, first: str, last: str) -> Any:
    sock, mid = layout.sock(), layout.span(first, last)
    unpack = layout.unpack

    def decode_one(data: bytes) -> Any:
        v = unpack(data)
        return _new(cls, (v[0], v[2], v[3], v[4], _socket(v[sock]), *v[mid]))

    return decode_one


_decode_state = _with_socket(_STATE, StateRecord, "oldstate", "fd")
_decode_retransmit = _with_socket(_RETRANSMIT, RetransmitRecord, "state", "err")
_decode_reset = _with_socket(_RESET, ResetRecord, "direction", "reason")
_decode_drop = _with_socket(_DROP, DropRecord, "location", "sk_rcvbuf")

_DECODERS = {
    RT_REC_RECV: (_RECV.size, _decode_recv),
    RT_REC_SEND: (_SEND.size, _decode_send),
    RT_REC_ACCEPT: (_ACCEPT.size, _decode_accept),
    RT_REC_STATE: (_STATE.size, _decode_state),
    RT_REC_RETRANSMIT: (_RETRANSMIT.size, _decode_retransmit),
    RT_REC_RESET: (_RESET.size, _decode_reset),
    RT_REC_DROP: (_DROP.size, _decode_drop),
    RT_REC_RECV_HEAD: (ctypes.sizeof(RtRecvHead), _decode_recv_head),
    RT_REC_SEND_HEAD: (ctypes.sizeof(RtSendHead), _decode_send_head),
}

_TYPE = struct.Struct("<I")


class RecordDecodeError(ValueError):
    pass


def record_type(data: bytes) -> int:
    return int(_TYPE.unpack_from(data, 8)[0])


def decode(data: bytes) -> KernelRecord:
    """Decode one ring-buffer record (the bytes BPF submitted)."""
    if len(data) < 24:
        raise RecordDecodeError(f"record of {len(data)} bytes is shorter than its header")
    kind = record_type(data)
    try:
        size, decode_one = _DECODERS[kind]
    except KeyError:
        raise RecordDecodeError(f"unknown record type {kind}") from None
    if len(data) < size:
        raise RecordDecodeError(f"{RECORD_TYPE_NAMES[kind]} record of {len(data)} bytes < {size}")
    return decode_one(data)  # type: ignore[no-any-return]


# ---- JSON form (raw-record files, test fixtures) ---------------------------------------

_BY_NAME: dict[str, type] = {
    "recv": RecvRecord,
    "send": SendRecord,
    "accept": AcceptRecord,
    "state": StateRecord,
    "retransmit": RetransmitRecord,
    "reset": ResetRecord,
    "drop": DropRecord,
}
_NAME_OF = {cls: name for name, cls in _BY_NAME.items()}


def to_json(record: KernelRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": _NAME_OF[type(record)]}
    for name, value in record._asdict().items():
        if isinstance(value, SocketId | RxPath):
            value = value._asdict()
        elif isinstance(value, bytes):  # a recv's captured first bytes
            if not value:
                continue
            value = value.decode("latin-1")  # one character per byte, any byte
        out[name] = value
    return out


def from_json(data: dict[str, Any]) -> KernelRecord:
    cls = _BY_NAME[data["kind"]]
    kwargs = {k: v for k, v in data.items() if k != "kind"}
    if "sock" in kwargs:
        kwargs["sock"] = SocketId(**kwargs["sock"])
    if kwargs.get("rx") is not None:
        kwargs["rx"] = RxPath(**kwargs["rx"])
    if "head" in kwargs:
        kwargs["head"] = str(kwargs["head"]).encode("latin-1")
    return cls(**kwargs)  # type: ignore[no-any-return]
