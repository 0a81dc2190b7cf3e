"""BCC's compiled probes as data: taken from a compiled module, stored, loaded without clang.

BCC compiles C text with clang every time (~2.7 s here for reqtrace's probes) and has no
object cache. What it hands the kernel, though, is plain: per program, its instructions;
per map, a type and sizes. The maps are created during compilation and their file
descriptors are written into the instructions (ld_imm64 with src_reg BPF_PSEUDO_MAP_FD).
So a compiled module can be stored as instructions with each map reference replaced by
the map's index, and loaded later by creating the maps afresh, writing their new
descriptors back in and loading the programs: the kernel's verifier checks them again as
usual. Only what this module knows how to rebuild is stored: tracepoint and raw-tracepoint
programs referencing maps by descriptor (a kprobe, fentry or LSM program, or any other kind
of reference, makes the module "not storable" and the run compiles as before).

`LoadedProgram` stands in for a `bcc.BPF` object where ProbeSession uses one: tables by
name (`map_fd`, `Leaf`, item get and set), `funcs` (with `fd`), the attachment tables and
`cleanup()`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from tracer.kernel.native_stderr import captured_native_stderr

BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PSEUDO_MAP_FD = 1
LD_IMM64 = 0x18
INSTRUCTION = struct.Struct("<BBhi")  # code, dst_reg|src_reg<<4, off, imm
PREFIXES = {
    b"tracepoint__": BPF_PROG_TYPE_TRACEPOINT,
    b"raw_tracepoint__": BPF_PROG_TYPE_RAW_TRACEPOINT,
}
OTHER_AUTOLOAD = (b"kprobe__", b"kretprobe__", b"kfunc__", b"kretfunc__", b"lsm__")


class NotStorable(Exception):
    """The module uses something `LoadedProgram` cannot rebuild; the message says what."""


class ProgramLoadError(Exception):
    """A stored program could not be loaded or attached here; the message says why."""


def _libbcc() -> ctypes.CDLL:
    """Our own handle on libbcc (BCC's `lib` keeps its argtypes; we declare ours)."""
    lib = ctypes.CDLL("libbcc.so.0", use_errno=True)
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "bcc_create_map": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p] + [ctypes.c_int] * 4),
        "bcc_prog_load": (
            ctypes.c_int,
            [
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            ],
        ),
        "bpf_attach_tracepoint": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]),
        "bpf_attach_raw_tracepoint": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p]),
        "bpf_close_perf_event_fd": (ctypes.c_int, [ctypes.c_int]),
        "bpf_lookup_elem": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]),
        "bpf_update_elem": (
            ctypes.c_int,
            [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulonglong],
        ),
        "bpf_num_functions": (ctypes.c_ulonglong, [ctypes.c_void_p]),
        "bpf_function_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_ulonglong]),
        "bpf_function_start": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        "bpf_function_size": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_char_p]),
        "bpf_module_license": (ctypes.c_char_p, [ctypes.c_void_p]),
        "bpf_module_kern_version": (ctypes.c_uint, [ctypes.c_void_p]),
        "bpf_num_tables": (ctypes.c_ulonglong, [ctypes.c_void_p]),
        "bpf_table_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_ulonglong]),
        "bpf_table_fd_id": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_ulonglong]),
        "bpf_table_key_desc_id": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_ulonglong]),
        "bpf_table_leaf_desc_id": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_ulonglong]),
        "bpf_obj_get_info": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


class _MapInfo(ctypes.Structure):
    """The head of the kernel's struct bpf_map_info (include/uapi/linux/bpf.h)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("padding", ctypes.c_uint8 * 64),
    ]


@dataclass(frozen=True, slots=True)
class MapSpec:
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: str  # BCC's JSON type description (the ctypes Key/Leaf are rebuilt from it)
    leaf_desc: str


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    name: str
    prog_type: int
    instructions: bytes  # map references hold the map's index, not a descriptor
    map_slots: tuple[int, ...]  # instruction indexes of the ld_imm64 map references


@dataclass(frozen=True, slots=True)
class CompiledProgram:
    license: str
    kern_version: int
    maps: tuple[MapSpec, ...]
    programs: tuple[ProgramSpec, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "license": self.license,
            "kern_version": self.kern_version,
            "maps": [
                [
                    m.name,
                    m.map_type,
                    m.key_size,
                    m.value_size,
                    m.max_entries,
                    m.flags,
                    m.key_desc,
                    m.leaf_desc,
                ]
                for m in self.maps
            ],
            "programs": [
                [p.name, p.prog_type, base64.b64encode(p.instructions).decode(), list(p.map_slots)]
                for p in self.programs
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompiledProgram:
        """ValueError/KeyError/TypeError on anything malformed."""
        maps = tuple(
            MapSpec(str(n), int(t), int(k), int(v), int(e), int(f), str(kd), str(ld))
            for n, t, k, v, e, f, kd, ld in data["maps"]
        )
        programs = tuple(
            ProgramSpec(str(n), int(t), base64.b64decode(i), tuple(int(s) for s in slots))
            for n, t, i, slots in data["programs"]
        )
        return cls(str(data["license"]), int(data["kern_version"]), maps, programs)


def extract(bpf: Any) -> CompiledProgram:
    """What a compiled (not yet loaded) `bcc.BPF` module would load; NotStorable if unsure."""
    lib = _libbcc()
    module = bpf.module
    maps: list[MapSpec] = []
    fd_to_index: dict[int, int] = {}
    for table in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, table).decode()
        fd = lib.bpf_table_fd_id(module, table)
        info = _MapInfo()
        length = ctypes.c_uint32(ctypes.sizeof(info))
        if fd < 0 or lib.bpf_obj_get_info(fd, ctypes.byref(info), ctypes.byref(length)) != 0:
            raise NotStorable(f"map {name} has no descriptor")
        fd_to_index[fd] = len(maps)
        maps.append(
            MapSpec(
                name,
                info.type,
                info.key_size,
                info.value_size,
                info.max_entries,
                info.map_flags,
                (lib.bpf_table_key_desc_id(module, table) or b"").decode(),
                (lib.bpf_table_leaf_desc_id(module, table) or b"").decode(),
            )
        )
    programs: list[ProgramSpec] = []
    for index in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, index)
        if name.startswith(OTHER_AUTOLOAD):
            raise NotStorable(f"{name.decode()} is neither a tracepoint nor a raw tracepoint")
        prog_type = next((t for p, t in PREFIXES.items() if name.startswith(p)), None)
        if prog_type is None:
            continue  # not loaded automatically by BCC either
        start = lib.bpf_function_start(module, name)
        size = lib.bpf_function_size(module, name)
        code = bytearray(ctypes.string_at(start, size))
        programs.append(ProgramSpec(name.decode(), prog_type, *_unbind_maps(code, fd_to_index)))
    return CompiledProgram(
        (lib.bpf_module_license(module) or b"GPL").decode(),
        int(lib.bpf_module_kern_version(module)),
        tuple(maps),
        tuple(programs),
    )


def _unbind_maps(code: bytearray, fd_to_index: dict[int, int]) -> tuple[bytes, tuple[int, ...]]:
    """Replace the map descriptors in ld_imm64 instructions by map indexes."""
    slots = []
    index = 0
    count = len(code) // INSTRUCTION.size
    while index < count:
        opcode, regs, offset, imm = INSTRUCTION.unpack_from(code, index * INSTRUCTION.size)
        if opcode == LD_IMM64:
            source = regs >> 4
            if source == BPF_PSEUDO_MAP_FD:
                if imm not in fd_to_index:
                    raise NotStorable(f"instruction {index} refers to an unknown map fd {imm}")
                INSTRUCTION.pack_into(
                    code, index * INSTRUCTION.size, opcode, regs, offset, fd_to_index[imm]
                )
                slots.append(index)
            elif source != 0:
                raise NotStorable(f"instruction {index}: ld_imm64 with source {source}")
            index += 2  # ld_imm64 spans two instructions
            continue
        index += 1
    return bytes(code), tuple(slots)


# -- loading -------------------------------------------------------------------------------------


class _Table:
    """A map by descriptor, as much of a BCC table as ProbeSession uses."""

    def __init__(self, map_fd: int, key: Any, leaf: Any, lib: ctypes.CDLL) -> None:
        self.map_fd = map_fd
        self.Key = key
        self.Leaf = leaf
        self._lib = lib

    def __getitem__(self, key: Any) -> Any:
        leaf = self.Leaf()
        if self._lib.bpf_lookup_elem(self.map_fd, ctypes.byref(key), ctypes.byref(leaf)) < 0:
            raise KeyError(key)
        return leaf

    def __setitem__(self, key: Any, leaf: Any) -> None:
        if self._lib.bpf_update_elem(self.map_fd, ctypes.byref(key), ctypes.byref(leaf), 0) < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


@dataclass(frozen=True, slots=True)
class _Function:
    name: bytes
    fd: int


class LoadedProgram:
    """A stored CompiledProgram, loaded: maps created, programs verified, not yet attached."""

    def __init__(self, compiled: CompiledProgram) -> None:
        from bcc import BPF

        self._lib = _libbcc()
        self.funcs: dict[bytes, _Function] = {}
        self.tables: dict[bytes, _Table] = {}
        self.tracepoint_fds: dict[bytes, int] = {}
        self.raw_tracepoint_fds: dict[bytes, int] = {}
        self.kprobe_fds: dict[bytes, int] = {}
        self.uprobe_fds: dict[bytes, int] = {}
        self.kfunc_entry_fds: dict[bytes, int] = {}
        self.kfunc_exit_fds: dict[bytes, int] = {}
        self.lsm_fds: dict[bytes, int] = {}
        self._map_fds: list[int] = []
        self._programs = compiled.programs
        atexit.register(self.cleanup)
        try:
            for spec in compiled.maps:
                fd = self._lib.bcc_create_map(
                    spec.map_type,
                    spec.name.encode()[:15],
                    spec.key_size,
                    spec.value_size,
                    spec.max_entries,
                    spec.flags,
                )
                if fd < 0:
                    raise ProgramLoadError(
                        f"creating map {spec.name}: {os.strerror(ctypes.get_errno())}"
                    )
                self._map_fds.append(fd)
                key = BPF._decode_table_type(json.loads(spec.key_desc)) if spec.key_desc else None
                leaf = (
                    BPF._decode_table_type(json.loads(spec.leaf_desc)) if spec.leaf_desc else None
                )
                self.tables[spec.name.encode()] = _Table(fd, key, leaf, self._lib)
            for program in compiled.programs:
                self._load(program, compiled)
        except BaseException:
            self.cleanup()
            raise

    def _load(self, program: ProgramSpec, compiled: CompiledProgram) -> None:
        code = bytearray(program.instructions)
        for slot in program.map_slots:
            opcode, regs, offset, index = INSTRUCTION.unpack_from(code, slot * INSTRUCTION.size)
            INSTRUCTION.pack_into(
                code, slot * INSTRUCTION.size, opcode, regs, offset, self._map_fds[index]
            )
        buffer = ctypes.create_string_buffer(bytes(code), len(code))
        log = ctypes.create_string_buffer(1 << 16)
        with captured_native_stderr():
            fd = self._lib.bcc_prog_load(
                program.prog_type,
                program.name.encode(),
                buffer,
                len(code),
                compiled.license.encode(),
                compiled.kern_version,
                1,
                log,
                len(log),
            )
        if fd < 0:
            error = os.strerror(ctypes.get_errno())
            last = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ProgramLoadError(f"loading {program.name}: {error} {last[0]}".strip())
        self.funcs[program.name.encode()] = _Function(program.name.encode(), fd)

    def attach_all(self) -> int:
        """Attach every program where its name says (as BCC's autoload does); the count."""
        for program in self._programs:
            name = program.name.encode()
            fd = self.funcs[name].fd
            if program.prog_type == BPF_PROG_TYPE_TRACEPOINT:
                target = name[len(b"tracepoint__") :].replace(b"__", b":")
                category, _, event = target.partition(b":")
                with captured_native_stderr():
                    link = self._lib.bpf_attach_tracepoint(fd, category, event)
                table = self.tracepoint_fds
            else:
                target = name[len(b"raw_tracepoint__") :]
                with captured_native_stderr():
                    link = self._lib.bpf_attach_raw_tracepoint(fd, target)
                table = self.raw_tracepoint_fds
            if link < 0:
                raise ProgramLoadError(f"attaching {program.name} to {target.decode()} failed")
            table[target] = link
        return len(self._programs)

    def __getitem__(self, name: bytes) -> _Table:
        return self.tables[name]

    def cleanup(self) -> None:
        """Detach and close everything (idempotent, never raises)."""
        for perf_fd in self.tracepoint_fds.values():
            self._lib.bpf_close_perf_event_fd(perf_fd)
        self.tracepoint_fds.clear()
        fds = [
            *self.raw_tracepoint_fds.values(),
            *(f.fd for f in self.funcs.values()),
            *self._map_fds,
        ]
        self.raw_tracepoint_fds.clear()
        self.funcs.clear()
        self._map_fds = []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        atexit.unregister(self.cleanup)
