"""`reqtrace run` from the command to the first traced request (issue 16): fast, clear, and in
the user's own environment.

What these check is order and behaviour, never wall-clock speed (scripts/bench_startup.py
measures that): an app mistake is told before any probe work starts, with `serve`'s message
and status; every step says what it does; a second run reuses the plan and the compiled
program; an app in its own virtualenv imports its own packages.
"""

from __future__ import annotations

import http.client
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer.recording.reader import load_recording

from .helpers import ROOT
from .run_fixtures import free_port

pytestmark = pytest.mark.bpf

KERNEL_WORK = ("attach strategies", "compiling", "attached", "probe plan")


def run_reqtrace(
    *args: str, cwd: Path | str = ROOT, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


APPS = {
    "nosuch:app": 'could not import module "nosuch"',
    "app.py": 'APP must look like "module:attribute"',
    "broken:app": 'importing "broken" raised RuntimeError: broken at import',
    "fine:nope": 'attribute "nope" not found in module "fine"',
}


@pytest.mark.parametrize("app", sorted(APPS))
def test_an_app_mistake_is_told_like_serve_before_any_probe_work(tmp_path: Path, app: str) -> None:
    (tmp_path / "broken.py").write_text('raise RuntimeError("broken at import")\n')
    (tmp_path / "fine.py").write_text("async def app(scope, receive, send):\n    pass\n")
    cache = tmp_path / "cache"  # empty: the slowest case, trials and clang still to do
    env = {"REQTRACE_CACHE_DIR": str(cache)}
    served = run_reqtrace("serve", app, "--port", "0", cwd=tmp_path)
    traced = run_reqtrace("run", app, "--port", "0", "--no-tui", cwd=tmp_path, env=env)

    assert served.returncode == traced.returncode == 1
    error = next(line for line in served.stderr.splitlines() if "Error loading ASGI app" in line)
    assert APPS[app] in error
    assert error in traced.stderr.splitlines()
    # Told before anything touched the kernel: no trial, no compile, no plan stored.
    progress = [line for line in traced.stderr.splitlines() if line.startswith("reqtrace:")]
    assert progress[0].startswith("reqtrace: checked: can trace here")
    assert not [line for line in progress if any(word in line for word in KERNEL_WORK)]
    assert not list(cache.glob("plan-*")) and not list(cache.glob("program-*"))
    assert "Traceback" not in traced.stderr.split(error)[0]


def _progress(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("reqtrace: ")]


def _index(lines: list[str], needle: str) -> int:
    for number, line in enumerate(lines):
        if needle in line:
            return number
    raise AssertionError(f"no line with {needle!r} in:\n" + "\n".join(lines))


def test_each_step_says_what_it_does_and_a_second_run_reuses_plan_and_program(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    env = {"REQTRACE_CACHE_DIR": str(cache)}
    runs = []
    for number in range(3):
        if number == 2:  # a plan but no program: clang runs while the app imports
            for program in cache.glob("program-*"):
                program.unlink()
        port = free_port()
        result = run_reqtrace(
            "run",
            "tests.server_apps.basic:app",
            "--port",
            str(port),
            "--no-tui",
            "--duration",
            "1",
            "--no-access-log",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        runs.append(_progress(result.stderr))
    cold, warm, half = runs
    order = ["checked", "importing", "app imported", "attach strategies", "compiling"]
    order += ["attached", "serving", "stopping: --duration 1 s reached", "detaching"]
    positions = [_index(cold, needle) for needle in order]
    assert positions == sorted(positions), cold
    attached = cold[_index(cold, "attached")].split()[2]  # "attached N/N probes"
    total, _, of = attached.partition("/")
    assert total == of and int(total) > 0
    assert "probe plan: cached for this boot" in "\n".join(warm)
    assert "compiled earlier on this kernel" in "\n".join(warm)
    assert not [line for line in warm if "compiling" in line or "attach strategies" in line]
    assert _index(warm, "attached") < _index(warm, "serving")
    # Nothing said during the compile in the background is lost (clang's output is captured).
    for needle in ("compiling", "app imported", "probe plan: cached", "attached", "serving"):
        _index(half, needle)


def test_record_problems_are_told_before_anything_starts(tmp_path: Path) -> None:
    app = ("tests.server_apps.basic:app", "--port", "0", "--no-tui")
    missing = run_reqtrace("run", *app, "--record", str(tmp_path / "no" / "dir" / "x.jsonl"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert f"the folder {tmp_path / 'no' / 'dir'} does not exist" in missing.stderr
    assert "importing" not in missing.stderr

    existing = tmp_path / "trace.jsonl"
    existing.write_text("my precious recording\n")
    refused = run_reqtrace("run", *app, "--record", str(existing))
    assert refused.returncode == 2
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert existing.read_text() == "my precious recording\n"

    forced = run_reqtrace("run", *app, "--record", str(existing), "--force", "--duration", "0.5")
    assert forced.returncode == 0, forced.stderr
    recording = load_recording(str(existing))
    assert recording.header is not None and recording.footer is not None


def test_an_unwritable_record_folder_is_told_before_anything_starts(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "none", str(folder)], check=True)
    try:
        result = run_reqtrace(
            "run", "tests.server_apps.basic:app", "--no-tui", "--record", str(folder / "t.jsonl")
        )
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert result.returncode == 2
    assert f"cannot write in {folder}: Read-only file system" in result.stderr
    assert "importing" not in result.stderr and "Traceback" not in result.stderr


# -- the user's own environment -------------------------------------------------------------


@pytest.fixture(scope="module")
def user_project() -> Iterator[Path]:
    """A project folder with its own .venv holding a package only it has (built offline).

    World-readable (the app runs as nobody); made with Debian's python3 -m venv, the
    package installed from a local folder with pip, no network.
    """
    root = Path(tempfile.mkdtemp(prefix="reqtrace-user-project-"))
    try:
        source = root / "localdep_src"
        (source / "reqtrace_localdep").mkdir(parents=True)
        (source / "reqtrace_localdep" / "__init__.py").write_text('VALUE = "only-in-the-venv"\n')
        (source / "setup.py").write_text(
            "from setuptools import setup\n"
            'setup(name="reqtrace-localdep", version="1.0", packages=["reqtrace_localdep"])\n'
        )
        project = root / "project"
        project.mkdir()
        (project / "app.py").write_text(
            textwrap.dedent(
                """\
                import importlib.util
                import json
                import os
                import sys

                import reqtrace_localdep


                async def app(scope, receive, send):
                    if scope["type"] != "http":
                        return
                    body = json.dumps({
                        "value": reqtrace_localdep.VALUE,
                        "prefix": sys.prefix,
                        "uid": os.getuid(),
                        "sees_orjson": importlib.util.find_spec("orjson") is not None,
                    }).encode()
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                    await send({"type": "http.response.body", "body": body})
                """
            )
        )
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(project / ".venv")], check=True)
        subprocess.run(
            [str(project / ".venv/bin/pip"), "install", "-q", "--no-index",
             "--no-build-isolation", str(source)],
            check=True, capture_output=True,
        )  # fmt: skip
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(
                    path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)
                )
        yield project
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _get_json(port: int) -> dict[str, object]:
    import json

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    body = json.loads(response.read())
    connection.close()
    assert isinstance(body, dict)
    return body


def _without_virtual_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}


def _traced_run_in(
    project: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[dict[str, object], str, str]:
    """`reqtrace run app:app --no-tui` from `project`, as nobody; one GET; stopped."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tracer", "run", "app:app", "--port", str(port), "--no-tui", *extra],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_without_virtual_env(), "SUDO_UID": "65534", "SUDO_GID": "65534",
             "SUDO_USER": "nobody", **(env or {})},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                body = _get_json(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "the traced server never answered"
                time.sleep(0.1)
        time.sleep(0.5)  # the trace completes
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return body, out, err


def test_an_app_runs_in_its_own_virtualenv_with_its_own_packages(user_project: Path) -> None:
    venv = user_project / ".venv"
    body, out, err = _traced_run_in(user_project)
    assert body["value"] == "only-in-the-venv"
    assert body["prefix"] == str(venv)
    assert body["uid"] == 65534
    assert body["sees_orjson"] is False  # reqtrace's own packages stay out of the app's way
    assert f"with {venv}/bin/python (the virtualenv {venv})" in err
    assert " GET / 200 " in out  # traced: one line per request
    assert "1 request traced" in err


def test_python_option_and_virtual_env_pick_the_interpreter(
    user_project: Path, tmp_path: Path
) -> None:
    elsewhere = Path(tempfile.mkdtemp(prefix="reqtrace-elsewhere-"))
    try:
        shutil.copy(user_project / "app.py", elsewhere / "app.py")
        elsewhere.chmod(0o755)
        (elsewhere / "app.py").chmod(0o644)
        venv = user_project / ".venv"
        body, _, err = _traced_run_in(elsewhere, "--python", str(venv / "bin/python"))
        assert body["value"] == "only-in-the-venv" and "(--python)" in err
        body, _, err = _traced_run_in(elsewhere, env={"VIRTUAL_ENV": str(venv)})
        assert body["value"] == "only-in-the-venv" and "$VIRTUAL_ENV" in err
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_a_missing_package_names_the_interpreter_to_install_it_into(tmp_path: Path) -> None:
    (tmp_path / "needs.py").write_text("import reqtrace_localdep\nasync def app(s, r, x): pass\n")
    result = run_reqtrace("run", "needs:app", "--no-tui", cwd=tmp_path)  # reqtrace's own Python
    assert result.returncode == 1
    assert "No module named 'reqtrace_localdep'" in result.stderr
    assert f"the app runs with {Path(sys.executable).parent}" in result.stderr
    assert "no virtualenv was found" in result.stderr and "--python PATH" in result.stderr
    typo = run_reqtrace("run", "needz:app", "--no-tui", cwd=tmp_path)
    assert typo.returncode == 1 and "--python PATH" not in typo.stderr  # a typo: no env hint


def test_without_httptools_the_app_environment_is_told_what_to_install(
    user_project: Path,
) -> None:
    """The fallback to reqtrace's httptools is off here: the message names pip install."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from tracer.session.server_child import httptools_problem\n"
        "print(httptools_problem(''))\n"
    )
    venv_python = user_project / ".venv/bin/python"
    result = subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True)
    assert f"{venv_python} -m pip install httptools" in result.stdout
