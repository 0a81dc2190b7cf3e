"""Turn a probe plan into the compiler flags of probes/reqtrace.bpf.c, in one place.

BCC compiles C text; the plan reaches the program only as -D definitions built here:
RT_<POINT>=<mechanism id> selects each point's adapter, RT_DRIVER_POLL_*_LIST names the NIC
drivers' poll functions, RT_RINGBUF_PAGES sizes the ring buffer. `reqtrace doctor --ebpf`
prints the flags and the program they select.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from probes import PROBES_DIR, source_path
from probes.catalog import DRIVER_POINT_PREFIX, OPTIONAL_FIELDS, Mechanism
from tracer.kernel.attach_plan import ProbePlan
from tracer.records.kernel import (
    RT_MECH_FENTRY,
    RT_MECH_KPROBE,
    RT_MECH_RAW_TRACEPOINT,
    RT_MECH_TRACEPOINT,
)

MECHANISM_IDS: dict[Mechanism, int] = {
    "tracepoint": RT_MECH_TRACEPOINT,
    "raw_tracepoint": RT_MECH_RAW_TRACEPOINT,
    "fentry": RT_MECH_FENTRY,
    "kprobe": RT_MECH_KPROBE,
}

DEFAULT_RINGBUF_PAGES = 1024  # 4 MiB: ~200 ms of records at 100k records/s

# Silence clang: kernel headers produce hundreds of warnings that say nothing about us.
QUIET_CFLAGS = ["-w", "-Wno-everything"]


SHARED_HEADER = "events.h"  # a normal include: its layouts are the contract with user space
LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"$', re.MULTILINE)


def possible_cpus() -> int:
    """Number of CPU ids the kernel may use (from /sys/devices/system/cpu/possible)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    highest = max(int(part.split("-")[-1]) for part in text.split(","))
    return highest + 1


def optional_field_flags() -> list[str]:
    """-DRT_HAS_<EVENT>_<FIELD> for each optional tracepoint field this kernel has."""
    from tracer.kernel.attach_trials import tracepoint_fields

    flags = []
    for tracepoint, names in OPTIONAL_FIELDS.items():
        present = tracepoint_fields(tracepoint) or set()
        event = tracepoint.partition(":")[2].upper()
        flags += [f"-DRT_HAS_{event}_{name.upper()}" for name in names if name in present]
    return flags


def program_text() -> str:
    """probes/reqtrace.bpf.c with its per-concern headers and adapters pasted in.

    BCC rewrites TRACEPOINT_PROBE / RAW_TRACEPOINT_PROBE definitions and map calls
    (`map.lookup(...)`) only in the main source text, not in included files, so every local
    `#include "X"` of reqtrace.bpf.c but events.h is replaced by X's text.
    """
    text = source_path("reqtrace.bpf.c").read_text()

    def paste(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == SHARED_HEADER:
            return match.group(0)
        path = source_path(name)
        if not path.is_file():
            raise RuntimeError(f"reqtrace.bpf.c includes {name}, which is not in probes/")
        return f"/* ---- {name} ---- */\n" + path.read_text()

    return LOCAL_INCLUDE.sub(paste, text)


def cflags_for(plan: ProbePlan, ringbuf_pages: int = DEFAULT_RINGBUF_PAGES) -> list[str]:
    if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
        raise ValueError(f"ring buffer pages must be a power of two, not {ringbuf_pages}")
    flags = [
        *QUIET_CFLAGS,
        f"-I{PROBES_DIR}",
        f"-DRT_RINGBUF_PAGES={ringbuf_pages}",
        f"-DRT_NR_CPUS={possible_cpus()}",
    ]
    drivers: dict[Mechanism, list[str]] = {"fentry": [], "kprobe": []}
    for entry in plan.entries:
        if entry.chosen is None:
            continue
        name = entry.point.name
        if name.startswith(DRIVER_POINT_PREFIX):
            function = entry.strategy.targets[0]  # type: ignore[union-attr]
            if function not in drivers[entry.chosen]:
                drivers[entry.chosen].append(function)
            continue
        flags.append(f"-DRT_{name.upper()}={MECHANISM_IDS[entry.chosen]}")
    flags += optional_field_flags()
    for mechanism, functions in drivers.items():
        if functions:
            items = " ".join(f"X({fn})" for fn in functions)
            flags.append(f"-DRT_DRIVER_POLL_{mechanism.upper()}_LIST(X)={items}")
    return flags


def program_listing(plan: ProbePlan, ringbuf_pages: int = DEFAULT_RINGBUF_PAGES) -> str:
    """The program exactly as BCC will compile it, preceded by its flags."""
    flags = " ".join(cflags_for(plan, ringbuf_pages))
    return f"/* cflags: {flags} */\n" + program_text()
