"""Which Python runs the app: the user's own environment, as `uvicorn app:app` would.

The tracer needs BCC, which Debian builds for /usr/bin/python3 and which reqtrace's own
environment links in; the app needs its own packages, installed in the user's virtualenv.
So the two sides run under different interpreters: the tracer under reqtrace's, the server
child under the app's, chosen in this order (the first that applies wins):

1. `--python PATH` (an interpreter, or a virtualenv directory);
2. the active virtualenv, $VIRTUAL_ENV (sudo keeps it only with -E), unless it is
   reqtrace's own (activated to run reqtrace, it says nothing about the app);
3. a virtualenv called .venv or venv in the app directory (--app-dir), then in the current
   directory: where uvicorn users keep theirs;
4. reqtrace's own interpreter.

The server child needs reqtrace's server code importable there: it gets a private
directory holding only a link to reqtrace's `tracer` package, first on its sys.path (no
PYTHONPATH: the app's own subprocesses see nothing of it), and, last on sys.path, a link to
reqtrace's httptools, used only when the app's environment has none and the ABI matches
(tracer/session/server_child.py says what to install otherwise). Everything else the app
imports comes from its own environment, as under uvicorn.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tracer

VENV_NAMES = (".venv", "venv")
NOT_FOUND = "reqtrace's own; no virtualenv found"
MIN_VERSION = (3, 11)


class AppPythonError(RuntimeError):
    """The asked-for interpreter cannot be used; the message is one sentence."""


@dataclass(frozen=True, slots=True)
class AppPython:
    executable: str  # as found, not resolved: a venv's bin/python must stay a venv's
    why: str  # how it was chosen, for the progress line
    own: bool  # reqtrace's own interpreter: the child needs no help to import tracer
    venv: str = ""  # the virtualenv it belongs to ("" when none)

    def describe(self) -> str:
        return f"{self.executable} ({self.why})"

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: an activated virtualenv's VIRTUAL_ENV and PATH."""
        env = dict(base)
        if self.venv and not self.own:
            env["VIRTUAL_ENV"] = self.venv
            env["PATH"] = os.pathsep.join([str(Path(self.venv, "bin")), env.get("PATH", "")])
        return env


def venv_of(executable: str) -> str:
    """The virtualenv directory of an interpreter path (its parent's parent has pyvenv.cfg)."""
    root = Path(executable).parent.parent
    return str(root) if (root / "pyvenv.cfg").is_file() else ""


def _identity(executable: str) -> str:
    """Two interpreter paths run the same environment when this is equal."""
    venv = venv_of(executable)
    return os.path.realpath(venv) if venv else os.path.realpath(executable)


def _own_identity() -> str:
    if sys.prefix != sys.base_prefix:
        return os.path.realpath(sys.prefix)
    return os.path.realpath(sys.executable)


def _venv_python(directory: Path) -> str:
    for name in ("python", "python3"):
        candidate = directory / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return ""


def _found(executable: str, why: str) -> AppPython:
    return AppPython(executable, why, _identity(executable) == _own_identity(), venv_of(executable))


def choose_app_python(
    option: str | None,
    environ: Mapping[str, str],
    app_dir: str,
    cwd: str,
) -> AppPython:
    """The interpreter the app runs under (module docstring: the order)."""
    if option:
        path = Path(option)
        if path.is_dir():
            executable = _venv_python(path)
            if not executable:
                raise AppPythonError(f"--python {option}: no bin/python in that folder")
            return _found(executable, "--python")
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AppPythonError(f"--python {option}: no such interpreter (or not executable)")
        return _found(str(path), "--python")
    active = environ.get("VIRTUAL_ENV", "")
    if active:
        executable = _venv_python(Path(active))
        if executable and _identity(executable) != _own_identity():
            return _found(executable, "the active virtualenv, $VIRTUAL_ENV")
    searched: list[Path] = []
    for base in (Path(app_dir), Path(cwd)):
        base = base if base.is_absolute() else Path(cwd, base)
        for name in VENV_NAMES:
            directory = base / name
            if directory in searched:
                continue
            searched.append(directory)
            executable = _venv_python(directory) if (directory / "pyvenv.cfg").is_file() else ""
            if executable:
                return _found(executable, f"the virtualenv {directory}")
    return AppPython(sys.executable, NOT_FOUND, True, venv_of(sys.executable))


class ChildImportPath:
    """The private directories that let the app's interpreter import reqtrace's server.

    `code`: holds `tracer` -> reqtrace's package, nothing else (first on sys.path).
    `fallback`: holds `httptools` -> reqtrace's copy (last on sys.path; "" if none).
    Removed by close(). Readable by everyone: the child runs as the app's user.
    """

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="reqtrace-child-")
        os.chmod(self.root, 0o755)
        self.code = os.path.join(self.root, "code")
        os.mkdir(self.code, 0o755)
        os.symlink(Path(tracer.__file__).resolve().parent, os.path.join(self.code, "tracer"))
        self.fallback = ""
        spec = importlib.util.find_spec("httptools")
        if spec is not None and spec.submodule_search_locations:
            self.fallback = os.path.join(self.root, "fallback")
            os.mkdir(self.fallback, 0o755)
            package = Path(next(iter(spec.submodule_search_locations))).resolve()
            os.symlink(package, os.path.join(self.fallback, "httptools"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)


BOOTSTRAP = """\
import sys
if sys.version_info < {min_version!r}:
    sys.stderr.write("reqtrace: the app's interpreter %s is Python %s; reqtrace's server "
                     "needs Python {min_text} or newer (choose one with --python)\\n"
                     % (sys.executable, sys.version.split()[0]))
    sys.exit(4)
sys.path.insert(0, {code!r})
try:
    from tracer.session.server_child import main
except Exception as exc:
    sys.stderr.write("reqtrace: the app's user cannot import reqtrace's server code "
                     "(%s) with %s: %s\\n" % ({real!r}, sys.executable, exc))
    sys.exit(4)
sys.exit(main(sys.argv[1:]))
"""


def child_command(python: AppPython, paths: ChildImportPath | None) -> list[str]:
    """argv prefix that runs tracer.session.server_child under `python`."""
    if python.own or paths is None:
        return [python.executable, "-m", "tracer.session.server_child"]
    code = BOOTSTRAP.format(
        min_version=MIN_VERSION,
        min_text=".".join(map(str, MIN_VERSION)),
        code=paths.code,
        real=str(Path(tracer.__file__).resolve().parent),
    )
    return [python.executable, "-c", code]
