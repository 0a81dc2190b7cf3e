"""What a run can reuse from an earlier run on the same kernel: the probe plan and the program.

Measured on this project's 2-core VM (Linux 6.18, 47 tracepoints): the attach trials that
build the probe plan take ~4.3 s (each tracepoint attached and detached for real, ~85 ms
apiece, almost all of it in the kernel's detach), and clang compiling the probes ~2.7 s.
Neither result changes while the machine does not:

- the plan depends on the kernel build, what this boot allows (lockdown, mounts,
  privileges) and the catalog: it is kept per boot (key: boot id, kernel build, catalog,
  facts, versions);
- the compiled program depends on the program text, its flags, the kernel build and BCC:
  it is kept per kernel build (tracer/session/compiled_program.py stores and reloads it).

The cache lives in /var/cache/reqtrace (REQTRACE_CACHE_DIR elsewhere; REQTRACE_NO_CACHE=1
turns it off). It holds BPF bytecode that root loads into the kernel, so it is used only
when the directory belongs to us and nobody else may write in it. A damaged or stale entry
is a miss, never an error: the run compiles and tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from probes.catalog import CATALOG, ProbePoint
from tracer import __version__
from tracer.kernel.attach_plan import PlanEntry, ProbePlan, StrategyVerdict
from tracer.kernel.attach_trials import Attempt
from tracer.kernel.system_facts import SystemFacts

CACHE_FORMAT = 1
DEFAULT_CACHE_DIR = "/var/cache/reqtrace"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
KERNEL_BTF = "/sys/kernel/btf/vmlinux"
KEEP_PROGRAMS = 4  # compiled programs kept (one per program version and kernel)


class ProbeCache:
    """A directory of cached plans and programs, or a disabled cache (`directory` None)."""

    def __init__(self, directory: Path | None, why_disabled: str = "") -> None:
        self.directory = directory
        self.why_disabled = why_disabled

    @classmethod
    def open(cls, environ: dict[str, str] | None = None) -> ProbeCache:
        env = os.environ if environ is None else environ
        if env.get("REQTRACE_NO_CACHE"):
            return cls(None, "REQTRACE_NO_CACHE is set")
        directory = Path(env.get("REQTRACE_CACHE_DIR") or DEFAULT_CACHE_DIR)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.stat()
        except OSError as exc:
            return cls(None, f"cannot use {directory}: {exc.strerror or exc}")
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return cls(None, f"{directory} is not ours alone (owner or mode), so it is not used")
        return cls(directory)

    # -- plans -------------------------------------------------------------------------------

    def load_plan(self, key: str, points: tuple[ProbePoint, ...] = CATALOG) -> ProbePlan | None:
        data = self._read(f"plan-{key}.json")
        if data is None:
            return None
        try:
            return plan_from_json(data["plan"], points)
        except (KeyError, TypeError, ValueError):
            return None

    def store_plan(self, key: str, plan: ProbePlan) -> None:
        self._write(f"plan-{key}.json", {"format": CACHE_FORMAT, "plan": plan.as_json()})
        self._prune("plan-", keep=1, current=f"plan-{key}.json")

    # -- programs (the JSON of tracer/session/compiled_program.py) ---------------------------

    def load_program(self, key: str) -> dict[str, Any] | None:
        return self._read(f"program-{key}.json")

    def store_program(self, key: str, data: dict[str, Any]) -> None:
        self._write(f"program-{key}.json", {"format": CACHE_FORMAT, **data})
        self._prune("program-", keep=KEEP_PROGRAMS, current=f"program-{key}.json")

    def forget_program(self, key: str) -> None:
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / f"program-{key}.json").unlink()

    # -- files -------------------------------------------------------------------------------

    def _read(self, name: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        try:
            data = json.loads((self.directory / name).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return None
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        """Atomically (write, then rename): a reader never sees half a file."""
        if self.directory is None:
            return
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "w") as file:
                json.dump(data, file)
            os.replace(temporary, self.directory / name)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(temporary)

    def _prune(self, prefix: str, keep: int, current: str) -> None:
        assert self.directory is not None
        try:
            entries = [p for p in self.directory.glob(prefix + "*.json") if p.name != current]
            entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for stale in entries[keep - 1 :]:
            with contextlib.suppress(OSError):
                stale.unlink()


# -- keys --------------------------------------------------------------------------------------


def _digest(parts: Iterable[object]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(repr(part).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:32]


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def kernel_build() -> str:
    """Identifies the running kernel's build: its BTF (same build, same bytes), else uname."""
    hasher = hashlib.sha256(f"{platform.release()} {platform.version()}".encode())
    with contextlib.suppress(OSError), open(KERNEL_BTF, "rb") as btf:
        for block in iter(lambda: btf.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()[:32]


def plan_key(facts: SystemFacts, build: str, points: tuple[ProbePoint, ...] = CATALOG) -> str:
    """The plan holds for this boot of this kernel build, these facts and this catalog."""
    return _digest(
        (
            CACHE_FORMAT,
            __version__,
            build,
            _read_text(BOOT_ID),
            facts.bcc_version,
            facts.euid,
            sorted(facts.capabilities),
            facts.lockdown,
            facts.tracefs,
            facts.btf,
            facts.headers.state,
            facts.kprobes_in_kernel,
            points,
        )
    )


def program_key(text: str, cflags: list[str], build: str, bcc_version: str) -> str:
    """The compiled program holds for this text, these flags, this kernel build and BCC."""
    return _digest((CACHE_FORMAT, text, tuple(cflags), build, bcc_version))


# -- the plan as JSON and back -------------------------------------------------------------------


def plan_from_json(
    entries: list[dict[str, Any]], points: tuple[ProbePoint, ...] = CATALOG
) -> ProbePlan:
    """The inverse of ProbePlan.as_json(), for points of the catalog (ValueError otherwise)."""
    by_name = {point.name: point for point in points}
    plan_entries = []
    for entry in entries:
        point = by_name.get(entry["name"])
        if point is None:
            raise ValueError(f"unknown probe point {entry['name']!r}")
        verdicts = []
        for item in entry["strategies"]:
            attempt = Attempt(
                item["mechanism"], tuple(item["targets"]), bool(item["attached"]), item["reason"]
            )
            if point.strategy(attempt.mechanism) is None:
                raise ValueError(f"{point.name} has no {attempt.mechanism} strategy")
            verdicts.append(StrategyVerdict(attempt, bool(item["usable"]), item["why_not"]))
        chosen = entry["chosen"]
        if chosen is not None and point.strategy(chosen) is None:
            raise ValueError(f"{point.name} has no {chosen} strategy")
        plan_entries.append(PlanEntry(point, tuple(verdicts), chosen, entry["summary"]))
    if [e.point.name for e in plan_entries] != [p.name for p in points]:
        raise ValueError("the cached plan does not cover the catalog")
    return ProbePlan(tuple(plan_entries))
