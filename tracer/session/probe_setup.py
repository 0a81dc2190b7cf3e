"""The probes of a run, prepared as fast as this machine allows, with a word at each step.

    probes = RunProbes(facts, cache, progress)
    probes.start_compiling()        # user space only, may run while the app imports
    probes.make_plan()              # cached plan, or attach trials (kernel work)
    session = probes.load()         # a ProbeSession: loaded and attached, still inert

Three costs dominate a cold start here (2-core VM, 47 tracepoints): the attach trials
(~4.3 s), clang (~2.7 s) and, at the end of a run, detaching (~3.4 s one by one: the
kernel waits for an RCU grace period per tracepoint under one lock). The first two are
cached (tracer/session/probe_cache.py, compiled_program.py): a second run on the same
kernel builds nothing and loads the stored program in ~0.15 s. Detaching runs on a few
threads, which overlaps what the kernel lets overlap (~2 s).

Nothing that loads a BPF program happens before `make_plan`: `start_compiling` only runs
clang (which creates maps, no programs), so an app mistake found meanwhile stops the run
before anything of ours runs in the kernel.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from probes.catalog import CATALOG
from tracer.kernel.attach_plan import ProbePlan, build_plan
from tracer.kernel.attach_trials import AttachTrials
from tracer.kernel.bpf_program import DEFAULT_RINGBUF_PAGES, cflags_for, program_text
from tracer.kernel.interfaces import nic_driver_points
from tracer.kernel.native_stderr import captured_native_stderr
from tracer.kernel.probe_loader import ProbeLoadError, ProbeSession
from tracer.kernel.ringbuf_reader import RingBufferReader
from tracer.kernel.system_facts import SystemFacts
from tracer.session.compiled_program import (
    CompiledProgram,
    LoadedProgram,
    NotStorable,
    ProgramLoadError,
    extract,
)
from tracer.session.probe_cache import ProbeCache, kernel_build, plan_key, program_key

DETACH_THREADS = 4  # measured: 47 tracepoints detach in 3.3 s on 1 thread, 2.1 s on 4


class PlanError(RuntimeError):
    """Required probe points cannot attach here; the message says which."""


class RunProbes:
    def __init__(self, facts: SystemFacts, cache: ProbeCache, say: Callable[[str], None]) -> None:
        self.facts = facts
        self.cache = cache
        self.say = say
        self.build = kernel_build()
        self.plan: ProbePlan | None = None
        self.plan_cached = False
        self.program_cached = False
        self._compiler: threading.Thread | None = None
        self._compiled: Any = None  # a bcc.BPF compiled with autoload deferred
        self._stored: CompiledProgram | None = None
        self._program_key = ""
        self._compile_error: str = ""
        # The catalog, and the poll function of each NIC's driver (virtnet_poll, ...).
        driver_points, self._driver_notes = nic_driver_points(hardware_only=True)
        self.points = (*CATALOG, *driver_points)
        self._plan_key = plan_key(facts, self.build, self.points)
        cached_plan = cache.load_plan(self._plan_key, self.points)
        if cached_plan is not None and cached_plan.can_trace:
            self.plan, self.plan_cached = cached_plan, True

    # -- 1. the program, in user space ------------------------------------------------------

    def start_compiling(self) -> None:
        """With a cached plan: fetch the stored program, else start clang in a thread."""
        if self.plan is None or self._compiler is not None or self._stored is not None:
            return
        cflags = cflags_for(self.plan, DEFAULT_RINGBUF_PAGES)
        text = program_text()
        self._program_key = program_key(text, cflags, self.build, self.facts.bcc_version)
        data = self.cache.load_program(self._program_key)
        if data is not None:
            try:
                self._stored = CompiledProgram.from_json(data)
                self.program_cached = True
                return
            except (KeyError, TypeError, ValueError):
                self.cache.forget_program(self._program_key)
        self.say("compiling the probes (clang, a few seconds; cached for the next runs)")
        self._compiler = threading.Thread(
            target=self._compile, args=(text, cflags), name="reqtrace-compile", daemon=True
        )
        self._compiler.start()

    def _compile(self, text: str, cflags: list[str]) -> None:
        with captured_native_stderr() as err:
            try:
                self._compiled = _compile_only()(text=text.encode(), cflags=cflags)
            except Exception as exc:
                errors = err.lines_matching("error:", "Failed", "failed", "Permission denied")
                self._compile_error = errors[0] if errors else str(exc)

    # -- 2. the plan: kernel work -------------------------------------------------------------

    def make_plan(self) -> ProbePlan:
        if self.plan is not None:
            self.say("probe plan: cached for this boot")
            return self.plan
        self.say("trying the attach strategies (first run since boot: a few seconds)")
        started = time.monotonic()
        with AttachTrials(self.facts) as trials:
            plan = build_plan(trials, self.points, fallback_notes=self._driver_notes)
        if not plan.can_trace:
            missing = ", ".join(e.point.name for e in plan.missing_required)
            raise PlanError(
                f"required probe points cannot attach here ({missing}); see reqtrace doctor"
            )
        self.plan = plan
        self.cache.store_plan(self._plan_key, plan)
        self.say(f"probe plan ready ({time.monotonic() - started:.1f} s)")
        return plan

    # -- 3. load and attach -------------------------------------------------------------------

    def load(self, stop: threading.Event | None = None) -> FastProbeSession:
        """Loaded, attached, inert probes; ProbeLoadError says why not."""
        assert self.plan is not None
        self.start_compiling()
        session = FastProbeSession(self.plan)
        if self._stored is not None:
            try:
                session.adopt(self._load_stored(self._stored))
                return session
            except ProgramLoadError as exc:
                self.say(f"the cached probes did not load ({exc}); compiling them again")
                self.cache.forget_program(self._program_key)
                self._stored = None
                self.program_cached = False
                self.start_compiling()
        assert self._compiler is not None
        while self._compiler.is_alive():
            self._compiler.join(0.1)
            if stop is not None and stop.is_set():
                raise ProbeLoadError("stopped while the probes compiled")
        if self._compiled is None:
            raise ProbeLoadError(f"loading reqtrace's BPF probes failed: {self._compile_error}")
        bpf, self._compiled = self._compiled, None
        stored: CompiledProgram | None = None
        with contextlib.suppress(NotStorable):
            stored = extract(bpf)
        started = time.monotonic()
        with captured_native_stderr() as err:
            try:
                bpf.load_and_attach()
            except Exception as exc:
                bpf.cleanup()
                errors = err.lines_matching("error:", "Failed", "failed", "Permission denied")
                detail = errors[0] if errors else str(exc)
                raise ProbeLoadError(f"loading reqtrace's BPF probes failed: {detail}") from exc
        count = len(bpf.tracepoint_fds) + len(bpf.raw_tracepoint_fds)
        self.say(f"attached {count}/{count} probes ({time.monotonic() - started:.2f} s)")
        if stored is not None:
            self.cache.store_program(self._program_key, stored.as_json())
        session.adopt(bpf)
        return session

    def _load_stored(self, stored: CompiledProgram) -> LoadedProgram:
        started = time.monotonic()
        loaded = LoadedProgram(stored)
        try:
            count = loaded.attach_all()
        except BaseException:
            loaded.cleanup()
            raise
        self.say(
            f"attached {count}/{len(stored.programs)} probes, compiled earlier on this kernel"
            f" ({time.monotonic() - started:.2f} s)"
        )
        return loaded


@functools.cache
def _compile_only() -> type:
    """bcc.BPF that compiles but loads nothing until `load_and_attach()` (BCC's autoload)."""
    from bcc import BPF

    class CompileOnly(BPF):  # type: ignore[misc]
        def _trace_autoload(self) -> None:
            pass

        def load_and_attach(self) -> None:
            BPF._trace_autoload(self)

    return CompileOnly


class FastProbeSession(ProbeSession):
    """A ProbeSession around a program loaded by RunProbes, detached on a few threads."""

    def adopt(self, bpf: Any) -> None:
        self._bpf = bpf
        self._reader = RingBufferReader(bpf[b"events"].map_fd, self.ringbuf_pages * mmap.PAGESIZE)

    def open(self) -> FastProbeSession:
        if self._bpf is None:
            raise RuntimeError("RunProbes.load() prepares this session")
        return self

    def close(self) -> None:
        bpf = self._bpf
        if bpf is not None:
            detach_in_parallel(bpf)
        super().close()


def detach_in_parallel(bpf: Any) -> None:
    """Close the tracepoint attachments on DETACH_THREADS threads (then cleanup() is quick)."""
    from bcc import lib

    attachments = getattr(bpf, "tracepoint_fds", None)
    if not attachments:
        return
    fds = list(attachments.values())
    attachments.clear()
    with ThreadPoolExecutor(DETACH_THREADS) as pool:
        list(pool.map(lib.bpf_close_perf_event_fd, fds))
