"""Checks that can fail in a millisecond, made before anything slow starts.

A run used to find a bad --record path only when it opened the file, after ~10 s of probe
compilation, with a traceback. Here each output path is checked up front: its folder
exists and takes a new file (tried for real: as root, permission bits say little, while a
read-only mount or an immutable folder still refuses), it is not a folder or a symbolic
link, and an existing recording is not overwritten without --force.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class PreflightError(RuntimeError):
    """A check failed; the message is one sentence naming the flag and what to do."""


def check_output_path(path: str, flag: str, force: bool) -> None:
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.exists():
        raise PreflightError(f"{flag} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise PreflightError(f"{flag} {path}: {folder} is not a folder")
    if target.is_symlink():
        raise PreflightError(
            f"{flag} {path} is a symbolic link; reqtrace does not write through one"
            " (as root it could overwrite any file): give the real path"
        )
    if target.is_dir():
        raise PreflightError(f"{flag} {path} is a folder; give a file name")
    if target.exists() and not force:
        raise PreflightError(
            f"{flag} {path} already exists; choose another name, or add --force to overwrite it"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".reqtrace-check-")
    except OSError as exc:
        raise PreflightError(
            f"{flag} {path}: cannot write in {folder}: {exc.strerror or exc}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(outputs: list[tuple[str, str | None]], force: bool) -> None:
    """Each (flag, path) given; two flags naming the same file are refused too."""
    seen: dict[str, str] = {}
    for flag, path in outputs:
        if not path:
            continue
        check_output_path(path, flag, force)
        key = os.path.realpath(path)
        if key in seen:
            raise PreflightError(f"{seen[key]} and {flag} name the same file ({path})")
        seen[key] = flag
