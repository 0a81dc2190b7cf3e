"""Load reqtrace's probes, feed them their filters, hand out decoded records, detach.

    with ProbeSession(plan) as probes:          # compiled once, attached, still inert
        probes.set_targets(tgids={pid}, ports={8000})   # filters, then enable
        for record in probes.poll(timeout_ms=20):
            ...
    # detached here, on error, and on SIGTERM/SIGINT turned into exceptions by the caller

Records are drained on a timer: the programs submit without waking us (BPF_RB_NO_WAKEUP)
and force a wakeup only every `wakeup_every` records per CPU, a safety valve for bursts
that would otherwise fill the buffer before the next timer tick. Measured here: a forced
wakeup every 64 records cost ~270 ns per record, more than the record itself; the 20 ms
timer alone drains a 4 MiB buffer at up to ~1M records/s. Records the ring buffer had
no room for are counted per type in the `lost` map; `lost_records()` reads it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import mmap
import os
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from tracer.kernel.attach_plan import ProbePlan
from tracer.kernel.bpf_program import DEFAULT_RINGBUF_PAGES, cflags_for, program_text
from tracer.kernel.native_stderr import captured_native_stderr
from tracer.kernel.ringbuf_reader import RingBufferReader
from tracer.records.kernel import (
    RECORD_TYPE_NAMES,
    RT_CFG_CAPTURE_HEAD,
    RT_CFG_ENABLED,
    RT_CFG_FILTER_PORT,
    RT_CFG_FILTER_TGID,
    RT_MAX_TARGETS,
    KernelRecord,
    RecordDecodeError,
    RtConfig,
    decode,
)

logger = logging.getLogger("reqtrace.probes")


class ProbeLoadError(RuntimeError):
    """The probes could not be compiled or attached; the message says why, in one line."""


class ProbeSession:
    def __init__(
        self,
        plan: ProbePlan,
        *,
        ringbuf_pages: int = DEFAULT_RINGBUF_PAGES,
        wakeup_every: int = 2048,
        keep_raw: bool = False,
    ) -> None:
        self.plan = plan
        self.ringbuf_pages = ringbuf_pages
        self.wakeup_every = wakeup_every
        self.keep_raw = keep_raw
        self.compile_seconds = 0.0
        self.records_seen = 0
        self.decode_errors = 0
        self._bpf: Any = None
        self._reader: RingBufferReader | None = None
        self._raw: list[bytes] = []

    # -- life cycle --------------------------------------------------------------------

    def open(self) -> ProbeSession:
        from bcc import BPF

        started = time.monotonic()
        with captured_native_stderr() as err:
            try:
                self._bpf = BPF(
                    text=program_text().encode(),
                    cflags=cflags_for(self.plan, self.ringbuf_pages),
                )
            except Exception as exc:
                errors = err.lines_matching("error:", "Failed", "failed", "Permission denied")
                detail = errors[0] if errors else str(exc)
                raise ProbeLoadError(f"loading reqtrace's BPF probes failed: {detail}") from exc
        self.compile_seconds = time.monotonic() - started
        self._reader = RingBufferReader(
            self._bpf[b"events"].map_fd, self.ringbuf_pages * mmap.PAGESIZE
        )
        return self

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        bpf, self._bpf = self._bpf, None
        if bpf is not None:
            problems = detach_everything(bpf)
            if problems:
                logger.warning(
                    "detaching the probes reported: %s (every attachment was closed anyway)",
                    "; ".join(problems),
                )

    def __enter__(self) -> ProbeSession:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def bpf(self) -> Any:
        if self._bpf is None:
            raise RuntimeError("probes are not loaded")
        return self._bpf

    # -- filters -----------------------------------------------------------------------

    def set_targets(
        self, tgids: Iterable[int] = (), ports: Iterable[int] = (), capture_heads: bool = False
    ) -> None:
        """Which processes' syscalls and which local ports to trace; enables the probes.

        An empty collection means "no filter" for that dimension. At most RT_MAX_TARGETS
        of each: the kernel side compares them inline on every hit. `capture_heads`: the
        first read of each request also carries its first bytes (RT_REC_RECV_HEAD), for
        tracing without server hooks (`reqtrace attach`); may be changed at any time.
        """
        tgids, ports = sorted(set(tgids)), sorted(set(ports))
        if len(tgids) > RT_MAX_TARGETS or len(ports) > RT_MAX_TARGETS:
            raise ValueError(f"at most {RT_MAX_TARGETS} target processes and ports")
        value = RtConfig(
            flags=RT_CFG_ENABLED
            | (RT_CFG_FILTER_TGID if tgids else 0)
            | (RT_CFG_FILTER_PORT if ports else 0)
            | (RT_CFG_CAPTURE_HEAD if capture_heads else 0),
            wakeup_every=self.wakeup_every,
            tgid_count=len(tgids),
            port_count=len(ports),
        )
        for i, tgid in enumerate(tgids):
            value.tgids[i] = tgid
        for i, port in enumerate(ports):
            value.ports[i] = port
        config = self.bpf[b"config"]
        config[ctypes.c_int(0)] = config.Leaf.from_buffer_copy(bytes(value))

    def disable(self) -> None:
        config = self.bpf[b"config"]
        config[ctypes.c_int(0)] = config.Leaf.from_buffer_copy(bytes(RtConfig()))

    # -- records -----------------------------------------------------------------------

    def _decode(self, raws: list[bytes]) -> list[KernelRecord]:
        self.records_seen += len(raws)
        if self.keep_raw:
            self._raw.extend(raws)
        records = []
        for raw in raws:
            try:
                records.append(decode(raw))
            except RecordDecodeError:
                self.decode_errors += 1
        return records

    def poll(self, timeout_ms: int = 20) -> list[KernelRecord]:
        """Wait up to timeout_ms for a forced wakeup, then drain everything there is."""
        self.reader.wait(timeout_ms)
        return self._decode(self.reader.read_all())

    def drain(self) -> list[KernelRecord]:
        """Everything in the ring buffer now, without waiting."""
        return self._decode(self.reader.read_all())

    @property
    def reader(self) -> RingBufferReader:
        if self._reader is None:
            raise RuntimeError("probes are not loaded")
        return self._reader

    def take_raw(self) -> list[bytes]:
        raw, self._raw = self._raw, []
        return raw

    def lost_records(self) -> dict[str, int]:
        lost = self.bpf[b"lost"]
        counts = {}
        for index, name in RECORD_TYPE_NAMES.items():
            counts[name] = int(lost[ctypes.c_int(index)].value)
        return counts

    def program_ids(self) -> list[int]:
        """Kernel ids of our loaded programs (for eBPF run-time statistics)."""
        ids = []
        for fn in self.bpf.funcs.values():
            info = _prog_info(fn.fd)
            if info:
                ids.append(info)
        return ids


def _prog_info(fd: int) -> int:
    """bpf_prog_info.id of a program fd (via BCC's libbpf binding)."""
    from bcc import lib

    class ProgInfo(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]

    info = (ctypes.c_uint8 * 256)()
    length = ctypes.c_uint32(ctypes.sizeof(info))
    if lib.bpf_obj_get_info(fd, ctypes.byref(info), ctypes.byref(length)) != 0:
        return 0
    return int(ProgInfo.from_buffer(info).id)


# BCC's attachment tables, in the order BPF.cleanup() detaches them.
_ATTACHMENT_TABLES = (
    "kprobe_fds",
    "uprobe_fds",
    "tracepoint_fds",
    "raw_tracepoint_fds",
    "kfunc_entry_fds",
    "kfunc_exit_fds",
    "lsm_fds",
)


def detach_everything(bpf: Any) -> list[str]:
    """Run BCC's cleanup to the end even when one detach fails; returns what failed.

    BPF.cleanup() stops at the first attachment it cannot detach (say its fd was closed
    behind its back) and leaves the rest attached until the process exits, then raises
    again from its atexit hook. Here a failed attachment is dropped (its fd closed if it
    still is one) and cleanup goes on, so every program is detached and the module freed.
    """
    problems: list[str] = []
    for _ in range(256):  # each failure removes one attachment: this always ends
        try:
            with captured_native_stderr():
                bpf.cleanup()
            break
        except Exception as exc:
            problems.append(str(exc))
            if not _drop_one_attachment(bpf):
                break
    atexit.unregister(bpf.cleanup)
    return problems


def _drop_one_attachment(bpf: Any) -> bool:
    """Forget the attachment BPF.cleanup() just failed on: the first one it had left."""
    for table_name in _ATTACHMENT_TABLES:
        table = getattr(bpf, table_name, None)
        if table:
            fd = table.pop(next(iter(table)))  # cleanup goes in insertion order
            fds = fd.values() if isinstance(fd, dict) else [fd]  # uprobes/kprobes keep dicts
            for each in fds:
                with contextlib.suppress(OSError, TypeError):
                    os.close(each)
            return True
    return False
