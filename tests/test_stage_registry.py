"""The stage registry (tracer/model/stages.py) is the one source of truth for stages.

Every part that names stages derives from it or is checked here: adding a stage to the
registry without its teaching lesson, README row or (for a probe-observed stage) a probe
point that feeds it fails `test_the_registry_is_complete_everywhere`; naming a stage
anywhere the registry does not know fails the other tests.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from dashboards.teaching import LESSONS
from probes.catalog import CATALOG, ProbePoint, driver_poll_point
from tracer.model import stages as registry
from tracer.model.stages import (
    CONNECTION_STAGE_NAMES,
    PROBES,
    STAGE_BY_NAME,
    STAGES,
    StageDef,
)

ROOT = Path(__file__).resolve().parents[1]
README_ROW = re.compile(r"^\| ([a-z ]+) \| `([a-z_]+)` \| (.+) \|$")


def readme_stage_rows(text: str) -> list[tuple[str, str]]:
    """(layer, stage) of each row of the README's "The stages" table, in order."""
    section = text.split("## The stages", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = README_ROW.match(line.strip())
        if match:
            rows.append((match.group(1), match.group(2)))
    return rows


def registry_problems(
    stages: Iterable[StageDef],
    lessons: Mapping[str, object],
    readme_rows: list[tuple[str, str]],
    catalog: Iterable[ProbePoint],
) -> list[str]:
    """What is missing or unknown around a registry, one sentence per problem."""
    stages = tuple(stages)
    names = {stage.name for stage in stages}
    known = names | set(CONNECTION_STAGE_NAMES)
    problems = []
    fed = {feed for point in catalog for feed in point.feeds}
    for stage in stages:
        if stage.name not in lessons:
            problems.append(f"{stage.name}: no teaching lesson (dashboards/teaching.py)")
        if stage.evidence == PROBES and stage.name not in fed:
            problems.append(f"{stage.name}: no probe point feeds it (probes/catalog.py)")
    expected_rows = [(stage.layer, stage.name) for stage in stages]
    if readme_rows != expected_rows:
        problems.append(f"README stage table {readme_rows} != registry {expected_rows}")
    for name in lessons:
        if name not in known:
            problems.append(f"lesson for unknown stage {name!r}")
    for feed in sorted(fed - known):
        problems.append(f"probe catalog feeds unknown stage {feed!r}")
    return problems


def real_problems(stages: Iterable[StageDef] = STAGES) -> list[str]:
    readme = readme_stage_rows((ROOT / "README.md").read_text())
    catalog = (*CATALOG, driver_poll_point("eth0", "virtio_net"))
    return registry_problems(stages, LESSONS, readme, catalog)


def test_the_registry_is_complete_everywhere() -> None:
    assert real_problems() == []


def test_a_stage_added_to_the_registry_alone_is_caught() -> None:
    extra = StageDef("nic_queue", registry.KERNEL, "ring → poll", PROBES)
    problems = real_problems((*STAGES, extra))
    assert any("nic_queue: no teaching lesson" in p for p in problems)
    assert any("nic_queue: no probe point feeds it" in p for p in problems)
    assert any(p.startswith("README stage table") for p in problems)


def test_names_and_layers_are_unique_and_known() -> None:
    names = [stage.name for stage in STAGES]
    assert len(names) == len(set(names))
    assert not set(names) & set(CONNECTION_STAGE_NAMES)
    assert {stage.layer for stage in STAGES} <= set(registry.LAYERS)
    assert {stage.evidence for stage in STAGES} <= {registry.PROBES, registry.HOOKS, registry.GAPS}
    assert {stage.track for stage in STAGES} <= {"", registry.CPU_TRACK, registry.THREAD_TRACK}


def _built_stages(path: Path) -> list[tuple[str, str, int]]:
    """(name, layer constant, line) of every Stage built from literals in a module."""
    layer_names = {"KERNEL", "EVENT_LOOP", "SYSCALL", "SERVER", "APP", "GAP"}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Tuple) or len(node.elts) < 2:
            continue
        first, second = node.elts[0], node.elts[1]
        if (
            isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and isinstance(second, ast.Name)
            and second.id in layer_names
        ):
            found.append((first.value, getattr(registry, second.id), node.lineno))
    return found


def test_the_stage_builders_build_only_registered_stages_in_their_layers() -> None:
    """stage_builder.py (with hooks) and kernel_only.py (attach mode) together build every
    stage, each in its registry layer."""
    built = []
    for module in ("stage_builder.py", "kernel_only.py"):
        for name, layer, line in _built_stages(ROOT / "tracer/correlate" / module):
            assert name in STAGE_BY_NAME, f"{module}:{line} builds unknown stage {name!r}"
            assert STAGE_BY_NAME[name].layer == layer, f"{module}:{line}: {name} layer"
            built.append(name)
    assert set(built) == set(STAGE_BY_NAME)


def test_derived_tables_follow_the_registry() -> None:
    from dashboards.waterfall import OPTIONAL_ROWS, row_names
    from tracer.correlate.stage_builder import KERNEL_STAGES
    from tracer.recording.perfetto import CPU_STAGES, THREAD_STAGES

    assert {s.name for s in STAGES if s.optional} == OPTIONAL_ROWS
    assert row_names(None) == [s.name for s in STAGES if not s.optional]
    assert KERNEL_STAGES.split(", ") == [s.name for s in STAGES if s.rx_path]
    assert set(CPU_STAGES) | set(THREAD_STAGES) == {s.name for s in STAGES if s.track}
