"""Turn "module:attribute" into the ASGI app object, the way uvicorn does.

Importing the app runs the user's code, so it happens in the server process, as the app's
user: for `reqtrace run`, in the server child started as that user with the app's own
interpreter. Every failure becomes an `AppLoadError` whose message is one sentence a user
can act on (plus, when the app's own code raised, the traceback of the app's frames as
`detail`); the server logs it and exits 1.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

from tracer.server.config import ASGIApp, Config


class AppLoadError(Exception):
    """APP could not be imported or is not callable; the message says which and why."""

    def __init__(self, message: str, detail: str = "", missing_module: str = "") -> None:
        super().__init__(message)
        self.detail = detail  # the traceback of the app's own frames, when its code raised
        self.missing_module = missing_module  # a dependency of the app that is not installed


def load_app(config: Config) -> ASGIApp:
    """Return the ASGI app named by `config.app` (or the object itself when one was given)."""
    if not isinstance(config.app, str):
        app = config.app
    else:
        app = _import_from_string(config.app, config.app_dir)
    if config.factory:
        try:
            app = app()
        except TypeError as exc:
            raise AppLoadError(f"--factory: calling {config.app!s} failed: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"{config.app!s} is not callable, so it is not an ASGI app")
    return app


def _import_from_string(target: str, app_dir: str) -> ASGIApp:
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(f'APP must look like "module:attribute", got {target!r}')
    directory = str(Path(app_dir).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            # The app itself failed to import one of its own dependencies.
            raise AppLoadError(
                f'importing "{module_name}" failed: {exc} (the app runs with '
                f"{sys.executable}: is the package that provides it installed there?)",
                _app_frames(exc),
                exc.name or "?",
            ) from exc
        raise AppLoadError(
            f'could not import module "{module_name}" (looked in {directory} and sys.path)'
        ) from exc
    except Exception as exc:
        raise AppLoadError(
            f'importing "{module_name}" raised {type(exc).__name__}: {exc}', _app_frames(exc)
        ) from exc
    app: object = module
    try:
        for part in attribute.split("."):
            app = getattr(app, part)
    except AttributeError as exc:
        raise AppLoadError(f'attribute "{attribute}" not found in module "{module_name}"') from exc
    return app  # type: ignore[return-value]


def _app_frames(exc: BaseException) -> str:
    """The traceback from the first frame outside importlib: the app's code that raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    start = next(
        (
            index
            for index, frame in enumerate(frames)
            if "importlib" not in frame.filename and frame.filename != __file__
        ),
        len(frames),
    )
    lines = traceback.format_list(frames[start:])
    lines += traceback.format_exception_only(type(exc), exc)
    return "Traceback (most recent call last):\n" + "".join(lines).rstrip()
