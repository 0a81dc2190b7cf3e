"""Find out, by really attaching, which attach mechanisms work on this kernel.

For each strategy of a probe point we load a do-nothing program and attach it to every
target of the strategy (tracepoints, raw tracepoints, kernel functions), then detach. The
reason a mechanism fails is taken from what the kernel said (errno, BCC's message, the
kernel's feature files), never assumed.

Trials of one mechanism that fail for a reason that has nothing to do with the target
(the kernel refuses the program type, or has no kprobes at all) are not repeated for every
point: the first real failure is reused, and the reason says which target it was tried on.
"""

from __future__ import annotations

import errno as errno_module
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes import source_path
from probes.catalog import REQUIRED_FIELDS, Mechanism, ProbePoint, Strategy
from tracer.kernel.native_stderr import captured_native_stderr
from tracer.kernel.system_facts import TRACEFS_PATHS, SystemFacts

BCC_CFLAGS = ["-w", "-Wno-everything"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of trying one strategy here."""

    mechanism: Mechanism
    targets: tuple[str, ...]
    attached: bool
    reason: str = ""  # why it did not attach ("" when it did)

    def as_json(self) -> dict[str, object]:
        return {
            "mechanism": self.mechanism,
            "targets": list(self.targets),
            "attached": self.attached,
            "reason": self.reason,
        }


def tracepoint_fields(target: str) -> set[str] | None:
    """Field names of a tracepoint from its tracefs format, None when it does not exist."""
    category, _, event = target.partition(":")
    for root in TRACEFS_PATHS:
        try:
            text = Path(root, "events", category, event, "format").read_text()
        except OSError:
            continue
        return set(re.findall(r"field:[^;]*?\b(\w+)(?:\[\d*\])?;", text))
    return None


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 160 else text[:157] + "..."


class AttachTrials:
    """Runs attach trials; one instance per doctor run or loader start."""

    def __init__(self, facts: SystemFacts) -> None:
        self.facts = facts
        self._trial_bpf: Any = None
        self._compile_error = ""
        self._mechanism_refusal: dict[Mechanism, str] = {}

    # -- public -----------------------------------------------------------------------

    def try_strategy(self, strategy: Strategy) -> Attempt:
        refusal = self._precondition(strategy.mechanism)
        if refusal:
            return Attempt(strategy.mechanism, strategy.targets, False, refusal)
        trial = {
            "tracepoint": self._try_tracepoint,
            "raw_tracepoint": self._try_raw_tracepoint,
            "kprobe": self._try_kprobe,
            "fentry": self._try_fentry,
        }[strategy.mechanism]
        for target in dict.fromkeys(strategy.targets):
            reason = trial(target)
            if reason:
                return Attempt(strategy.mechanism, strategy.targets, False, reason)
        return Attempt(strategy.mechanism, strategy.targets, True)

    def try_point(self, point: ProbePoint) -> list[Attempt]:
        return [self.try_strategy(strategy) for strategy in point.strategies]

    def close(self) -> None:
        if self._trial_bpf is not None:
            with captured_native_stderr():
                self._trial_bpf.cleanup()
            self._trial_bpf = None

    def __enter__(self) -> AttachTrials:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- preconditions ----------------------------------------------------------------

    def _precondition(self, mechanism: Mechanism) -> str:
        if not self.facts.has_bpf_privileges:
            return "not tried: loading BPF needs root (or CAP_BPF + CAP_PERFMON)"
        if not self.facts.bcc_version:
            return f"not tried: {self.facts.bcc_error}"
        if mechanism == "fentry" and not self.facts.btf:
            return "fentry needs kernel BTF (/sys/kernel/btf/vmlinux is absent)"
        if mechanism in self._mechanism_refusal:
            return self._mechanism_refusal[mechanism]
        if mechanism != "fentry" and self._bpf() is None:
            return f"not tried: BCC could not compile the trial program ({self._compile_error})"
        return ""

    def _bpf(self) -> Any:
        if self._trial_bpf is None and not self._compile_error:
            from bcc import BPF

            with captured_native_stderr() as err:
                try:
                    self._trial_bpf = BPF(
                        src_file=str(source_path("attach_trial.bpf.c")).encode(),
                        cflags=BCC_CFLAGS,
                    )
                except Exception as exc:
                    self._compile_error = _short(str(exc))
            if self._compile_error and err.lines_matching("error"):
                self._compile_error = _short(err.lines_matching("error")[0])
        return self._trial_bpf

    # -- one target per mechanism -----------------------------------------------------

    def _try_tracepoint(self, target: str) -> str:
        fields = tracepoint_fields(target)
        if fields is None:
            return f"tracepoint {target} does not exist on this kernel"
        lacking = [f for f in REQUIRED_FIELDS.get(target, ()) if f not in fields]
        if lacking:
            return f"tracepoint {target} lacks field(s) {', '.join(lacking)} on this kernel"
        bpf = self._bpf()
        with captured_native_stderr() as err:
            try:
                bpf.attach_tracepoint(tp=target.encode(), fn_name=b"trial_tracepoint")
                bpf.detach_tracepoint(tp=target.encode())
            except Exception as exc:
                return _short(f"{target}: {exc} {err.last_line()}")
        return ""

    def _try_raw_tracepoint(self, target: str) -> str:
        bpf = self._bpf()
        with captured_native_stderr() as err:
            try:
                bpf.attach_raw_tracepoint(tp=target.encode(), fn_name=b"trial_raw_tracepoint")
                bpf.detach_raw_tracepoint(tp=target.encode())
            except Exception as exc:
                return _short(f"raw tracepoint {target}: {exc} {err.last_line()}")
        return ""

    def _try_kprobe(self, target: str) -> str:
        bpf = self._bpf()
        with captured_native_stderr() as err:
            try:
                bpf.attach_kprobe(event=target.encode(), fn_name=b"trial_kprobe")
                bpf.detach_kprobe(event=target.encode())
                return ""
            except Exception as exc:
                failure = _short(f"{exc} {err.last_line()}")
        if not self.facts.kprobes_in_kernel:
            reason = (
                "kernel has no kprobes (no kprobe PMU in /sys/bus/event_source/devices, no "
                f"kprobe_events in tracefs: built without CONFIG_KPROBES); attaching "
                f"{target} failed"
            )
            self._mechanism_refusal["kprobe"] = reason
            return reason
        return f"kprobe {target}: {failure}"

    def _try_fentry(self, target: str) -> str:
        from bcc import BPF

        text = f"KFUNC_PROBE({target}) {{ return 0; }}"
        with captured_native_stderr() as err:
            bpf = None
            try:
                bpf = BPF(text=text.encode(), cflags=BCC_CFLAGS)
                return ""
            except Exception as exc:
                message = str(exc)
            finally:
                if bpf is not None:
                    bpf.cleanup()
        kernel_said = err.lines_matching("Failed to load", "failed to", "Operation not permitted")
        if "Need super-user privileges" in message or any(
            "Operation not permitted" in line for line in kernel_said
        ):
            reason = (
                "kernel refused to load a BPF_PROG_TYPE_TRACING (fentry) program: "
                f"{errno_module.errorcode[errno_module.EPERM]} (tried on {target})"
            )
            self._mechanism_refusal["fentry"] = reason
            return reason
        detail = kernel_said[0] if kernel_said else message
        return _short(f"fentry {target}: {detail}")
