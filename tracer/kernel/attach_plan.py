"""The probe plan: for each probe point, which attach strategy reqtrace uses here and why.

Selection is a pure function of the attempts (tracer/kernel/attach_trials.py does the trying):
the first strategy, in catalog order, that attached and that reqtrace can use. A strategy
that would read kernel struct fields through header layouts is never used (see
probes/catalog.py for why). The plan is printed by `reqtrace doctor`,
stored in every recording header and drives which adapters the loader compiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from probes.catalog import CATALOG, DRIVER_POINT_PREFIX, Mechanism, ProbePoint, Strategy
from tracer.kernel.attach_trials import AttachTrials, Attempt


@dataclass(frozen=True, slots=True)
class StrategyVerdict:
    attempt: Attempt
    usable: bool
    reason: str  # why it is not used ("" when it is the chosen one or simply usable)

    def as_json(self) -> dict[str, object]:
        return {**self.attempt.as_json(), "usable": self.usable, "why_not": self.reason}


@dataclass(frozen=True, slots=True)
class PlanEntry:
    point: ProbePoint
    verdicts: tuple[StrategyVerdict, ...]
    chosen: Mechanism | None
    summary: str

    @property
    def strategy(self) -> Strategy | None:
        return self.point.strategy(self.chosen) if self.chosen else None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.point.name,
            "title": self.point.title,
            "layer": self.point.layer,
            "required": self.point.required,
            "chosen": self.chosen,
            "summary": self.summary,
            "gives_up": self.strategy.gives_up if self.strategy else "",
            "strategies": [v.as_json() for v in self.verdicts],
        }


@dataclass(frozen=True, slots=True)
class ProbePlan:
    entries: tuple[PlanEntry, ...]

    def chosen(self, point_name: str) -> Mechanism | None:
        for entry in self.entries:
            if entry.point.name == point_name:
                return entry.chosen
        return None

    @property
    def missing_required(self) -> list[PlanEntry]:
        return [e for e in self.entries if e.point.required and e.chosen is None]

    @property
    def can_trace(self) -> bool:
        return not self.missing_required

    def coverage(self) -> dict[str, str]:
        """point name -> mechanism in use, or "absent"."""
        return {e.point.name: e.chosen or "absent" for e in self.entries}

    def as_json(self) -> list[dict[str, object]]:
        return [e.as_json() for e in self.entries]

    def driver_poll_functions(self) -> dict[str, str]:
        """interface -> the NIC driver's poll function attached there (chosen points only)."""
        functions = {}
        for entry in self.entries:
            name = entry.point.name
            if name.startswith(DRIVER_POINT_PREFIX) and entry.chosen is not None:
                strategy = entry.point.strategy(entry.chosen)
                if strategy is not None:
                    functions[name.removeprefix(DRIVER_POINT_PREFIX)] = strategy.targets[0]
        return functions


def judge(strategy: Strategy, attempt: Attempt) -> StrategyVerdict:
    if not attempt.attached:
        return StrategyVerdict(attempt, False, attempt.reason)
    if strategy.reads_struct_layouts:
        return StrategyVerdict(
            attempt,
            False,
            f"attaches, but {strategy.gives_up or 'it needs kernel struct fields'}: offsets "
            "from header layouts may not match the running kernel, so reqtrace does not use it",
        )
    return StrategyVerdict(attempt, True, "")


def choose(
    point: ProbePoint,
    attempts: Iterable[Attempt],
    fallback_note: str = "",
) -> PlanEntry:
    verdicts = []
    chosen: Mechanism | None = None
    for strategy, attempt in zip(point.strategies, attempts, strict=False):
        verdict = judge(strategy, attempt)
        verdicts.append(verdict)
        if chosen is None and verdict.usable:
            chosen = strategy.mechanism
    if chosen:
        summary = f"{chosen} ({', '.join(point.strategy(chosen).targets)})"  # type: ignore[union-attr]
    elif fallback_note:
        summary = fallback_note
    elif not point.strategies:
        summary = "no strategy known for this point"
    else:
        summary = "no strategy works here: " + "; ".join(
            f"{v.attempt.mechanism}: {v.reason}" for v in verdicts
        )
    return PlanEntry(point, tuple(verdicts), chosen, summary)


def build_plan(
    trials: AttachTrials,
    points: Iterable[ProbePoint] = CATALOG,
    *,
    try_all: bool = False,
    prefer: Mapping[str, Mechanism] | None = None,
    fallback_notes: Mapping[str, str] | None = None,
) -> ProbePlan:
    """Try strategies and pick one per point.

    try_all: try every strategy (the doctor); otherwise stop at the first usable one (the
    loader, which should start fast). prefer: point name -> mechanism to use instead of the
    catalog order (for tests of fallbacks and for users who want to compare).
    """
    entries = []
    for point in points:
        ordered = list(point.strategies)
        wanted = (prefer or {}).get(point.name)
        if wanted:
            ordered.sort(key=lambda s: s.mechanism != wanted)
        attempts: list[Attempt] = []
        for strategy in ordered:
            attempt = trials.try_strategy(strategy)
            attempts.append(attempt)
            if not try_all and judge(strategy, attempt).usable:
                break
        reordered = ProbePoint(
            point.name, point.title, point.layer, point.feeds, tuple(ordered), point.required
        )
        entries.append(choose(reordered, attempts, (fallback_notes or {}).get(point.name, "")))
    return ProbePlan(tuple(entries))
