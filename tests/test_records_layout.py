"""probes/events.h and its Python mirror (tracer/records/kernel.py) agree, byte for byte."""

from __future__ import annotations

import ctypes
import json
import re
import struct

import pytest

from probes import PROBES_DIR
from tracer.correlate import synthetic
from tracer.kernel.bpf_program import QUIET_CFLAGS
from tracer.kernel.native_stderr import captured_native_stderr
from tracer.recording.raw_log import entry_from_json, entry_to_json
from tracer.records import kernel as records

EVENTS_H = (PROBES_DIR / "events.h").read_text()


def _field_offsets(ctype: type[ctypes.Structure], base: int = 0, prefix: str = "") -> dict:
    offsets = {}
    for name, field_type in ctype._fields_:
        if name.startswith("__pad"):
            continue
        offset = base + getattr(ctype, name).offset
        if isinstance(field_type, type) and issubclass(field_type, ctypes.Structure):
            offsets.update(_field_offsets(field_type, offset, f"{prefix}{name}."))
        else:
            offsets[prefix + name] = (offset, ctypes.sizeof(field_type))
    return offsets


@pytest.mark.bpf
def test_mirror_matches_what_bcc_compiles_from_events_h() -> None:
    from bcc import BPF

    program = '#include "events.h"\n' + "".join(
        f"BPF_ARRAY(layout_{name}, struct {name}, 1);\n" for name in records.MIRROR
    )
    with captured_native_stderr():
        bpf = BPF(text=program.encode(), cflags=[*QUIET_CFLAGS, f"-I{PROBES_DIR}"])
    try:
        for name, mirror in records.MIRROR.items():
            compiled = bpf[f"layout_{name}".encode()].Leaf
            assert ctypes.sizeof(compiled) == ctypes.sizeof(mirror), name
            assert _field_offsets(compiled) == _field_offsets(mirror), name
    finally:
        bpf.cleanup()


def test_decoder_formats_cover_every_byte_of_the_mirror() -> None:
    for name, mirror in records.MIRROR.items():
        fmt, names = records.flat_format(mirror)
        assert struct.calcsize(fmt) == ctypes.sizeof(mirror), name
        assert len(names) == len(_field_offsets(mirror)), name


def _header_constants() -> dict[str, int]:
    constants = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^\s*(RT_REC_\w+)\s*=\s*(\d+)", EVENTS_H, re.MULTILINE)
    }
    for m in re.finditer(r"^#define\s+(RT_\w+)\s+\(?(\d+)u?(?:\s*<<\s*(\d+))?\)?", EVENTS_H, re.M):
        value = int(m.group(2)) << int(m.group(3) or 0)
        constants[m.group(1)] = value
    return constants


def test_constants_match_the_header() -> None:
    constants = _header_constants()
    assert len(constants) > 20
    for name, value in constants.items():
        assert getattr(records, name) == value, name


def test_decode_roundtrip_of_a_packed_recv_record() -> None:
    raw = records.RtRecv()
    raw.head.ts_ns, raw.head.type, raw.head.tgid, raw.head.tid = 99, records.RT_REC_RECV, 7, 8
    raw.sock.sk, raw.sock.cookie, raw.sock.family = 0xFFFF888812345678, 42, 2
    raw.sock.lport, raw.sock.rport = 8000, 51000
    raw.sock.laddr[:4] = [127, 0, 0, 1]
    raw.sock.raddr[:4] = [10, 0, 0, 9]
    raw.fd, raw.ret, raw.enter_ts = 12, 80, 90
    raw.rx.flags = records.RT_RX_VALID | records.RT_RX_BACKLOG
    raw.rx.tcp_ts, raw.rx.segments, raw.rx.bytes, raw.rx.dev = 50, 2, 80, b"veth0"
    decoded = records.decode(bytes(raw))
    assert isinstance(decoded, records.RecvRecord)
    assert (decoded.ts_ns, decoded.pid, decoded.tid, decoded.fd, decoded.ret) == (99, 7, 8, 12, 80)
    assert decoded.sock.laddr == "127.0.0.1" and decoded.sock.raddr == "10.0.0.9"
    assert (decoded.sock.lport, decoded.sock.rport, decoded.sock.cookie) == (8000, 51000, 42)
    assert decoded.rx is not None and decoded.rx.via_backlog and decoded.rx.dev == "veth0"
    assert (decoded.rx.tcp_ts, decoded.rx.segments, decoded.rx.bytes) == (50, 2, 80)
    assert records.from_json(records.to_json(decoded)) == decoded


def test_decode_rejects_short_and_unknown_records() -> None:
    with pytest.raises(records.RecordDecodeError, match="shorter"):
        records.decode(b"\0" * 10)
    bad = bytearray(64)
    bad[8] = 200
    with pytest.raises(records.RecordDecodeError, match="unknown record type 200"):
        records.decode(bytes(bad))
    short_send = bytearray(64)
    short_send[8] = records.RT_REC_SEND
    with pytest.raises(records.RecordDecodeError, match="send record of 64 bytes"):
        records.decode(bytes(short_send))


def test_every_record_type_survives_a_json_round_trip() -> None:
    """Raw-record files store kernel records as JSON: no field may collide with `kind`
    (a drop record's `kind` once overwrote the record's name, and replay failed)."""
    sock = records.SocketId(0xFFFF8881, 7, 2, "127.0.0.1", 8000, "127.0.0.1", 51000)
    scenario = synthetic.Scenario()
    connection = scenario.connect(1_000_000, 50_000, fd=7)
    connection.request(2_000_000, response=(50_000,))
    connection.retransmit(3_000_000)
    connection.close(4_000_000, by="client")
    drop = records.DropRecord(10, 1, 2, 3, sock, 0xFFFFFFFF81000000, 1, 2, 4096, 2048)
    samples = [drop, *(r for r in scenario.records if not synthetic.is_hook(r))]
    for record in samples:
        line = json.dumps(entry_to_json(record))
        assert entry_from_json(json.loads(line)) == record
    assert len({type(record) for record in samples}) >= 6
