"""Facts about this machine that decide whether and how reqtrace can trace.

Everything here is read-only and cheap (files in /proc, /sys, /lib/modules); nothing loads
BPF. `tracing_blocker()` turns the facts into the one sentence a user sees when a tracing
command cannot run, with the command that fixes it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

HeaderState = Literal["exact", "nearest-linked", "kheaders", "missing"]

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
SETUP_HINT = "scripts/setup"


@dataclass(frozen=True, slots=True)
class HeaderStatus:
    state: HeaderState
    path: str = ""
    headers_release: str = ""

    def describe(self, kernel_release: str) -> str:
        if self.state == "exact":
            return f"exact ({self.path})"
        if self.state == "kheaders":
            return "from the kernel itself (/sys/kernel/kheaders.tar.xz)"
        if self.state == "nearest-linked":
            return (
                f"nearest-linked: {self.headers_release} headers for kernel {kernel_release} "
                f"({self.path}); safe for reqtrace's tracepoint probes, not for struct reads"
            )
        return "missing"


@dataclass(frozen=True, slots=True)
class Missing:
    """One thing reqtrace lacks here, and the command that fixes it."""

    what: str
    fix: str
    blocks_tracing: bool = True


@dataclass(frozen=True, slots=True)
class SystemFacts:
    kernel_release: str
    machine: str
    btf: bool
    lockdown: str
    tracefs: str  # mount point in use, "" when none
    debugfs: bool
    bcc_version: str  # "" when BCC cannot be imported
    bcc_error: str
    headers: HeaderStatus
    euid: int
    capabilities: frozenset[int]
    kprobes_in_kernel: bool
    bpf_stats_enabled: bool
    missing: tuple[Missing, ...] = field(default=())

    @property
    def has_bpf_privileges(self) -> bool:
        caps = self.capabilities
        return CAP_SYS_ADMIN in caps or {CAP_BPF, CAP_PERFMON} <= caps

    def as_json(self) -> dict[str, object]:
        return {
            "kernel_release": self.kernel_release,
            "machine": self.machine,
            "btf": self.btf,
            "lockdown": self.lockdown,
            "tracefs": self.tracefs,
            "debugfs": self.debugfs,
            "bcc_version": self.bcc_version,
            "bcc_error": self.bcc_error,
            "headers": {
                "state": self.headers.state,
                "path": self.headers.path,
                "headers_release": self.headers.headers_release,
            },
            "euid": self.euid,
            "bpf_privileges": self.has_bpf_privileges,
            "capabilities": sorted(_CAP_NAMES.get(c, str(c)) for c in self.capabilities),
            "kprobes_in_kernel": self.kprobes_in_kernel,
            "bpf_stats_enabled": self.bpf_stats_enabled,
        }


_CAP_NAMES = {
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
    CAP_PERFMON: "CAP_PERFMON",
    CAP_BPF: "CAP_BPF",
}


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def effective_capabilities() -> frozenset[int]:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            return frozenset(c for c in _CAP_NAMES if mask & (1 << c))
    return frozenset()


def lockdown_mode() -> str:
    """The active lockdown level ("none", "integrity", "confidentiality") or "unknown"."""
    text = _read("/sys/kernel/security/lockdown")
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else "unknown"


def _exists(path: str | Path) -> bool:
    """Path.exists() that treats "permission denied" as "cannot tell: no"."""
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def mounted_tracefs() -> str:
    """Where tracefs is mounted (readable or not), "" when it is not mounted at all."""
    mounts = {}
    for line in _read("/proc/self/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mounts[parts[1]] = parts[2]
    for path in TRACEFS_PATHS:
        if mounts.get(path) == "tracefs" or _exists(Path(path, "events")):
            return path
    return ""


def _headers_release(build: Path) -> str:
    release = _read(build / "include/config/kernel.release")
    if release:
        return release
    uts = _read(build / "include/generated/utsrelease.h")
    match = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts)
    return match.group(1) if match else ""


def header_status(kernel_release: str) -> HeaderStatus:
    """How BCC will find kernel headers for this kernel.

    BCC compiles against /lib/modules/$(uname -r)/build (or the kernel's own kheaders).
    When that link points at another release's headers, setup made it on purpose:
    reqtrace's probes use only tracepoint fields and opaque pointers, so no struct layout
    from those headers reaches the numbers.
    """
    build = Path("/lib/modules", kernel_release, "build")
    if _exists(build / "include"):
        release = _headers_release(build)
        resolved = str(build.resolve())
        if release == kernel_release:
            return HeaderStatus("exact", resolved, release)
        return HeaderStatus("nearest-linked", resolved, release or "unknown")
    if _exists("/sys/kernel/kheaders.tar.xz"):
        return HeaderStatus("kheaders", "/sys/kernel/kheaders.tar.xz", kernel_release)
    return HeaderStatus("missing")


def bcc_status() -> tuple[str, str]:
    """(version, error): BCC's version when `import bcc` works, else why not."""
    if importlib.util.find_spec("bcc") is None:
        return "", "the bcc Python module is not importable from this Python"
    try:
        import bcc
    except Exception as exc:  # libbcc missing or broken: say what it said
        return "", f"import bcc failed: {exc}"
    return str(getattr(bcc, "__version__", "unknown")), ""


def kprobes_in_kernel() -> bool:
    """Whether this kernel can create kprobes at all (PMU or legacy tracefs interface)."""
    if _exists("/sys/bus/event_source/devices/kprobe/type"):
        return True
    return any(_exists(Path(p, "kprobe_events")) for p in TRACEFS_PATHS)


def gather() -> SystemFacts:
    release = platform.release()
    bcc_version, bcc_error = bcc_status()
    facts = SystemFacts(
        kernel_release=release,
        machine=platform.machine(),
        btf=_exists("/sys/kernel/btf/vmlinux"),
        lockdown=lockdown_mode(),
        tracefs=mounted_tracefs(),
        debugfs="debugfs" in _read("/proc/self/mounts"),
        bcc_version=bcc_version,
        bcc_error=bcc_error,
        headers=header_status(release),
        euid=os.geteuid(),
        capabilities=effective_capabilities(),
        kprobes_in_kernel=kprobes_in_kernel(),
        bpf_stats_enabled=_read("/proc/sys/kernel/bpf_stats_enabled") == "1",
    )
    return _with_missing(facts)


def _with_missing(facts: SystemFacts) -> SystemFacts:
    missing: list[Missing] = []
    if not facts.has_bpf_privileges:
        missing.append(
            Missing(
                "root (or CAP_BPF + CAP_PERFMON) to load BPF programs",
                "run the command with sudo",
            )
        )
    if not facts.bcc_version:
        missing.append(
            Missing(
                f"BCC ({facts.bcc_error})",
                f"{SETUP_HINT}  (installs bpfcc-tools python3-bpfcc libbpfcc and a venv that"
                " can import bcc)",
            )
        )
    if not facts.tracefs:
        missing.append(
            Missing("tracefs is not mounted", "sudo mount -t tracefs nodev /sys/kernel/tracing")
        )
    if facts.headers.state == "missing":
        missing.append(
            Missing(
                f"kernel headers for {facts.kernel_release}",
                f"{SETUP_HINT}  (installs linux-headers-$(uname -r), or links the nearest"
                " Debian headers when none exist for this kernel)",
            )
        )
    if not facts.btf:
        missing.append(
            Missing(
                "kernel BTF (/sys/kernel/btf/vmlinux): fentry probes unavailable",
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
                blocks_tracing=False,
            )
        )
    return replace(facts, missing=tuple(missing))


def tracing_blocker(facts: SystemFacts) -> str | None:
    """One sentence saying why tracing cannot start here, or None when it can."""
    for item in facts.missing:
        if item.blocks_tracing:
            return f"reqtrace cannot trace here: missing {item.what}; fix: {item.fix}"
    return None
