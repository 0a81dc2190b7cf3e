"""`reqtrace doctor`: what this machine offers for tracing, and what is missing.

Prints kernel, BTF, lockdown, tracefs, BCC, headers, privileges, and for every probe point
of the catalog each attach strategy as really tried here, with the reason for each that
fails. Exit status 0 when reqtrace can trace, 2 otherwise (as `run`: cannot trace here).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from probes.catalog import CATALOG, MECHANISMS
from tracer.kernel.attach_plan import ProbePlan, build_plan
from tracer.kernel.attach_trials import AttachTrials
from tracer.kernel.interfaces import nic_driver_points
from tracer.kernel.system_facts import Missing, SystemFacts, gather, tracing_blocker


def diagnose() -> tuple[SystemFacts, ProbePlan, list[Missing]]:
    facts = gather()
    driver_points, notes = nic_driver_points()
    with AttachTrials(facts) as trials:
        plan = build_plan(trials, [*CATALOG, *driver_points], try_all=True, fallback_notes=notes)
    missing = list(facts.missing)
    if tracing_blocker(facts):
        return facts, plan, missing  # nothing could be tried: the blocker is the news
    for entry in plan.missing_required:
        missing.append(
            Missing(
                f"probe point {entry.point.name} ({entry.point.title}) cannot attach",
                "use a kernel with tracepoint " + ", ".join(entry.point.strategies[0].targets),
            )
        )
    return facts, plan, missing


def can_trace(facts: SystemFacts, plan: ProbePlan, missing: list[Missing]) -> bool:
    return plan.can_trace and not any(m.blocks_tracing for m in missing)


def as_json(facts: SystemFacts, plan: ProbePlan, missing: list[Missing]) -> dict[str, Any]:
    return {
        **facts.as_json(),
        "headers_note": facts.headers.describe(facts.kernel_release),
        "probe_points": plan.as_json(),
        "missing": [
            {"what": m.what, "fix": m.fix, "blocks_tracing": m.blocks_tracing} for m in missing
        ],
        "can_trace": can_trace(facts, plan, missing),
    }


def render(facts: SystemFacts, plan: ProbePlan, missing: list[Missing], console: Console) -> None:
    caps = " ".join(facts.as_json()["capabilities"]) or "none"  # type: ignore[arg-type]
    who = "root" if facts.euid == 0 else f"uid {facts.euid}"
    facts_table = Table.grid(padding=(0, 2))
    facts_table.add_row("kernel", f"{facts.kernel_release} {facts.machine}")
    facts_table.add_row("BTF", "yes" if facts.btf else "no")
    facts_table.add_row("lockdown", facts.lockdown)
    facts_table.add_row("tracefs", facts.tracefs or "not mounted")
    facts_table.add_row("BCC", facts.bcc_version or f"missing: {facts.bcc_error}")
    facts_table.add_row("headers", facts.headers.describe(facts.kernel_release))
    facts_table.add_row("privileges", f"{who}: {caps}")
    facts_table.add_row("kprobes", "available" if facts.kprobes_in_kernel else "not in this kernel")
    console.print(facts_table)
    console.print()

    reasons: dict[str, int] = {}
    table = Table(title="probe plan", title_justify="left", expand=False)
    table.add_column("point")
    table.add_column("uses")
    for mechanism in MECHANISMS:
        table.add_column(mechanism.replace("_", " "))
    for entry in plan.entries:
        cells: list[Text | str] = []
        by_mechanism = {v.attempt.mechanism: v for v in entry.verdicts}
        for mechanism in MECHANISMS:
            verdict = by_mechanism.get(mechanism)
            if verdict is None:
                cells.append(Text("—", style="dim"))
            elif verdict.usable:
                cells.append(Text("yes", style="green"))
            else:
                number = reasons.setdefault(verdict.reason, len(reasons) + 1)
                label = "attaches" if verdict.attempt.attached else "no"
                cells.append(
                    Text(f"{label} [{number}]", style="yellow" if label != "no" else "red")
                )
        uses = Text(entry.chosen or "absent", style="bold" if entry.chosen else "red")
        if not entry.chosen and not entry.point.required:
            uses = Text("covered" if "covered by" in entry.summary else "absent", style="yellow")
        table.add_row(entry.point.name, uses, *cells)
    console.print(table)
    for reason, number in reasons.items():
        console.print(f"  [{number}] {reason}", highlight=False, soft_wrap=True)
    for entry in plan.entries:
        if not entry.chosen and "covered by" in entry.summary:
            console.print(f"  {entry.point.name}: {entry.summary}", highlight=False, soft_wrap=True)
    console.print()
    for item in missing:
        console.print(f"missing: {item.what} — fix: {item.fix}", highlight=False, soft_wrap=True)
    if can_trace(facts, plan, missing):
        console.print("[green]reqtrace can trace here.[/green]")
    else:
        console.print("[red]reqtrace cannot trace here yet (see the lines above).[/red]")


def run_doctor(json_output: bool, ebpf: bool = False) -> int:
    if ebpf:
        return print_program()
    facts, plan, missing = diagnose()
    if json_output:
        json.dump(as_json(facts, plan, missing), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(facts, plan, missing, Console())
    return 0 if can_trace(facts, plan, missing) else 2


def print_program() -> int:
    """`reqtrace doctor --ebpf`: the program and flags the loader would compile here."""
    from tracer.kernel.bpf_program import program_listing

    facts = gather()
    blocker = tracing_blocker(facts)
    if blocker:
        print(blocker, file=sys.stderr)
        return 2
    with AttachTrials(facts) as trials:
        plan = build_plan(trials)
    sys.stdout.write(program_listing(plan))
    return 0


def doctor_command(args: Any) -> int:
    return run_doctor(args.json, args.ebpf)
