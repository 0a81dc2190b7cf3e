"""Imports follow the layers of tracer/__init__.py's module map, and no cycle returns.

Every import statement counts, wherever it stands: at module level, inside a function, or
under `if TYPE_CHECKING:` (a cycle hidden from the interpreter is still a cycle for the
reader). Layers, lowest first; a module may import its own package and lower layers only:

    0  tracer (the version), tracer.model, tracer.demo, probes
    1  tracer.records
    2  tracer.kernel, tracer.correlate, tracer.server, tracer.lab  (siblings: none imports another),
       tracer.hosted (may import tracer.server: both run in the app's interpreter)
    3  tracer.recording
    4  tracer.session
    5  dashboards
    6  tracer.commands (one module per command)
    7  tracer.cli (the command table), then tracer.__main__

and the bundled server depends on nothing of the tracer but the hook record types
(tracer.records.hooks), so it can run apps without any tracing code loaded; the hooks for
the user's own uvicorn/gunicorn (tracer.hosted) on nothing but those and tracer.server.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tracer", "dashboards", "probes")

LAYERS: dict[str, int] = {
    "tracer": 0,
    "tracer.model": 0,
    "tracer.demo": 0,
    "probes": 0,
    "tracer.records": 1,
    "tracer.kernel": 2,
    "tracer.correlate": 2,
    "tracer.server": 2,
    "tracer.lab": 2,
    "tracer.hosted": 2,
    "tracer.recording": 3,
    "tracer.session": 4,
    "dashboards": 5,
    "tracer.commands": 6,
    "tracer.cli": 7,
    "tracer.__main__": 8,
}
ONLY_THESE: dict[str, tuple[str, ...]] = {
    "tracer.server": ("tracer.server", "tracer.records.hooks"),
    "tracer.lab": ("tracer.lab",),
    "tracer.hosted": ("tracer.hosted", "tracer.server", "tracer.records.hooks"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every project module imported anywhere in the file (resolved to known modules)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names.append(node.module)
        for name in names:
            if name.split(".")[0] not in PACKAGES:
                continue
            # `from tracer.x import y`: y may be a module or a name in tracer.x
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {}
    for name, path in found.items():
        # a package's own __init__ is not a dependency of its modules
        edges[name] = {
            target
            for target in imports_of(path, known)
            if target != name and not name.startswith(target + ".")
        }
    return edges


def layer_key(module: str) -> str:
    best = ""
    for key in LAYERS:
        if (module == key or module.startswith(key + ".")) and len(key) > len(best):
            best = key
    assert best, f"{module} is in no layer: add it to LAYERS"
    return best


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in sorted(edges.items()):
        own = layer_key(source)
        for target in sorted(targets):
            theirs = layer_key(target)
            allowed = ONLY_THESE.get(own)
            if allowed is not None:
                if not any(target == a or target.startswith(a + ".") for a in allowed):
                    problems.append(f"{source} imports {target} ({own} may import only {allowed})")
                continue
            if theirs == own or (theirs == "tracer" and target == "tracer"):
                continue
            if LAYERS[theirs] >= LAYERS[own]:
                problems.append(
                    f"{source} (layer {LAYERS[own]}) imports {target} (layer {LAYERS[theirs]})"
                )
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_imports_follow_the_layers() -> None:
    assert layer_violations(graph()) == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_checks_can_fail() -> None:
    edges = {"tracer.model.trace": {"tracer.session.pipeline"}, "tracer.session.pipeline": set()}
    assert layer_violations(edges) == [
        "tracer.model.trace (layer 0) imports tracer.session.pipeline (layer 4)"
    ]
    assert layer_violations({"tracer.server.protocol": {"tracer.model.trace"}})
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]


def test_scripts_never_import_tests() -> None:
    offenders = []
    for path in sorted((ROOT / "scripts").iterdir()):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".py" or text.startswith("#!/bin/sh\n# Runs under the project's venv"):
            for line in text.splitlines():
                if line.lstrip().startswith(("from tests", "import tests")):
                    offenders.append(f"{path.name}: {line.strip()}")
    assert offenders == []
