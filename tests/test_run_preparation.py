"""The pieces `reqtrace run` prepares with before anything slow (issue 16), without root:
which Python runs the app, the output-path checks, the stop reasons, the cached plan and the
stored program's map references."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from probes.catalog import CATALOG
from tracer.kernel.attach_plan import ProbePlan, choose
from tracer.kernel.attach_trials import Attempt
from tracer.session.app_python import AppPythonError, choose_app_python
from tracer.session.compiled_program import (
    INSTRUCTION,
    LD_IMM64,
    CompiledProgram,
    MapSpec,
    NotStorable,
    ProgramSpec,
    _unbind_maps,
)
from tracer.session.preflight import PreflightError, check_output_path, check_outputs
from tracer.session.probe_cache import ProbeCache, plan_from_json
from tracer.session.signals import StopRequest

from .helpers import ROOT

# -- the app's interpreter ---------------------------------------------------------------------


def make_venv(folder: Path) -> Path:
    """Enough of a virtualenv for the choice: pyvenv.cfg and an executable bin/python."""
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = folder / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return python


def test_the_first_that_applies_wins(tmp_path: Path) -> None:
    app_dir, cwd, active = tmp_path / "app", tmp_path / "cwd", tmp_path / "active"
    app_dir.mkdir()
    cwd.mkdir()
    in_app_dir = make_venv(app_dir / ".venv")
    in_cwd = make_venv(cwd / "venv")
    activated = make_venv(active)
    explicit = make_venv(tmp_path / "explicit")
    env = {"VIRTUAL_ENV": str(active)}

    chosen = choose_app_python(str(explicit), env, str(app_dir), str(cwd))
    assert (chosen.executable, chosen.why) == (str(explicit), "--python")
    chosen = choose_app_python(str(tmp_path / "explicit"), env, str(app_dir), str(cwd))
    assert chosen.executable == str(explicit)  # a virtualenv folder works too
    chosen = choose_app_python(None, env, str(app_dir), str(cwd))
    assert chosen.executable == str(activated) and "VIRTUAL_ENV" in chosen.why
    chosen = choose_app_python(None, {}, str(app_dir), str(cwd))
    assert chosen.executable == str(in_app_dir) and chosen.venv == str(app_dir / ".venv")
    chosen = choose_app_python(None, {}, ".", str(cwd))  # --app-dir relative to the cwd
    assert chosen.executable == str(in_cwd)
    assert not chosen.own
    environment = chosen.environment({"PATH": "/usr/bin"})
    assert environment["VIRTUAL_ENV"] == str(cwd / "venv")
    assert environment["PATH"] == f"{cwd / 'venv' / 'bin'}:/usr/bin"


def test_without_a_virtualenv_the_app_runs_with_reqtraces_own(tmp_path: Path) -> None:
    chosen = choose_app_python(None, {}, str(tmp_path), str(tmp_path))
    assert chosen.own and chosen.executable == sys.executable
    own_venv = {"VIRTUAL_ENV": sys.prefix}  # reqtrace's own, activated: says nothing
    assert choose_app_python(None, own_venv, str(tmp_path), str(tmp_path)).own


def test_a_bad_python_option_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(AppPythonError, match="no such interpreter"):
        choose_app_python(str(tmp_path / "nope"), {}, ".", str(tmp_path))
    with pytest.raises(AppPythonError, match="no bin/python in that folder"):
        choose_app_python(str(tmp_path), {}, ".", str(tmp_path))


# -- output paths ------------------------------------------------------------------------------


def test_output_paths_are_checked_for_real(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="does not exist"):
        check_output_path(str(tmp_path / "missing" / "x.jsonl"), "--record", False)
    (tmp_path / "file").write_text("")
    with pytest.raises(PreflightError, match="is not a folder"):
        check_output_path(str(tmp_path / "file" / "x.jsonl"), "--record", False)
    with pytest.raises(PreflightError, match="is a folder"):
        check_output_path(str(tmp_path), "--record", False)
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "file")
    with pytest.raises(PreflightError, match="symbolic link"):
        check_output_path(str(tmp_path / "link.jsonl"), "--record", True)
    with pytest.raises(PreflightError, match=r"already exists.*--force"):
        check_output_path(str(tmp_path / "file"), "--record", False)
    check_output_path(str(tmp_path / "file"), "--record", True)
    check_output_path(str(tmp_path / "new.jsonl"), "--record", False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link.jsonl"]  # no leftovers
    with pytest.raises(PreflightError, match="name the same file"):
        check_outputs(
            [("--record", str(tmp_path / "a")), ("--record-raw", str(tmp_path / "a"))], False
        )


# -- stop reasons ------------------------------------------------------------------------------


def test_the_first_reason_wins_and_every_request_counts() -> None:
    stop = StopRequest()
    stop.request("Ctrl-C (SIGINT)")
    stop.set()
    stop.request("SIGTERM")
    assert stop.is_set() and stop.reason == "Ctrl-C (SIGINT)" and stop.count == 3
    plain = StopRequest()
    plain.set()
    assert plain.reason == StopRequest.DEFAULT_REASON


# -- the cache ---------------------------------------------------------------------------------


def synthetic_plan() -> ProbePlan:
    entries = []
    for point in CATALOG:
        attempts = [
            Attempt(s.mechanism, s.targets, index == 0, "" if index == 0 else "not tried")
            for index, s in enumerate(point.strategies)
        ][:1]
        entries.append(choose(point, attempts))
    return ProbePlan(tuple(entries))


def test_a_plan_survives_the_cache(tmp_path: Path) -> None:
    cache = ProbeCache.open({"REQTRACE_CACHE_DIR": str(tmp_path / "cache")})
    assert cache.directory is not None
    plan = synthetic_plan()
    cache.store_plan("k1", plan)
    assert cache.load_plan("k1") == plan
    assert cache.load_plan("other") is None
    (cache.directory / "plan-k1.json").write_text("{not json")
    assert cache.load_plan("k1") is None  # damaged: a miss, never an error
    with pytest.raises(ValueError):
        plan_from_json([{**plan.as_json()[0], "name": "no_such_point"}])


def test_a_cache_others_can_write_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    cache = ProbeCache.open({"REQTRACE_CACHE_DIR": str(folder)})
    assert cache.directory is None and "not ours alone" in cache.why_disabled
    assert ProbeCache.open({"REQTRACE_NO_CACHE": "1"}).directory is None


def _instruction(code: int, src: int = 0, imm: int = 0) -> bytes:
    return INSTRUCTION.pack(code, src << 4, 0, imm)


def test_map_references_are_stored_as_indexes() -> None:
    exit_insn = _instruction(0x95)
    code = bytearray(
        _instruction(LD_IMM64, 1, 7) + _instruction(0) + exit_insn
        + _instruction(LD_IMM64, 1, 9) + _instruction(0) + _instruction(LD_IMM64, 0, 42)
        + _instruction(0)
    )  # fmt: skip
    stored, slots = _unbind_maps(code, {7: 0, 9: 1})
    assert slots == (0, 3)
    immediates = [struct.unpack_from("<i", stored, slot * 8 + 4)[0] for slot in slots]
    assert immediates == [0, 1]
    assert stored[5 * 8 + 4] == 42  # a plain 64-bit constant is left alone
    with pytest.raises(NotStorable, match="unknown map fd"):
        _unbind_maps(bytearray(_instruction(LD_IMM64, 1, 5) + _instruction(0)), {})
    with pytest.raises(NotStorable, match="source 2"):
        _unbind_maps(bytearray(_instruction(LD_IMM64, 2, 7) + _instruction(0)), {7: 0})


def test_a_compiled_program_round_trips_through_json() -> None:
    program = CompiledProgram(
        "GPL",
        0,
        (MapSpec("events", 27, 0, 0, 4096, 0, "", ""),),
        (ProgramSpec("tracepoint__net__netif_rx", 5, b"\x95" + b"\0" * 7, ()),),
    )
    assert CompiledProgram.from_json(program.as_json()) == program


# -- BCC from a user's virtualenv ------------------------------------------------------------


@pytest.mark.skipif(
    not Path("/usr/lib/python3/dist-packages/bcc/__init__.py").is_file(),
    reason="Debian's python3-bpfcc is not installed",
)
def test_the_system_bcc_is_found_from_a_bare_virtualenv(tmp_path: Path) -> None:
    """reqtrace pip-installed into a user's virtualenv: `import bcc` still works."""
    import subprocess
    import venv

    venv.create(tmp_path / "venv", with_pip=False)
    system = Path("/usr/lib/python3/dist-packages")
    other = next(
        p.name for p in sorted(system.iterdir()) if p.is_dir() and (p / "__init__.py").is_file()
        and p.name != "bcc"
    )  # fmt: skip
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('bcc') is None\n"
        "from tracer.session.bcc_path import lend_system_bcc\n"
        "print(lend_system_bcc())\n"
        "import bcc, bcc.table\n"
        "print(bcc.__file__)\n"
        f"assert importlib.util.find_spec({other!r}) is None  # nothing else is lent\n"
    )
    result = subprocess.run(
        [str(tmp_path / "venv/bin/python"), "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lent, imported = result.stdout.split()
    assert lent == "/usr/lib/python3/dist-packages/bcc"
    assert imported == "/usr/lib/python3/dist-packages/bcc/__init__.py"
