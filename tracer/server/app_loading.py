"""Turn "module:attribute" into the ASGI app object, the way uvicorn does.

Importing the app runs the user's code, so it happens late: in the server process, after
`reqtrace run` has dropped privileges. Every failure becomes an `AppLoadError` whose message
is one sentence a user can act on; the CLI prints it and exits 1.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from tracer.server.config import ASGIApp, Config


class AppLoadError(Exception):
    """APP could not be imported or is not callable; the message says which and why."""


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
            raise  # the app itself failed to import one of its own dependencies
        raise AppLoadError(
            f'could not import module "{module_name}" (looked in {directory} and sys.path)'
        ) from exc
    app: object = module
    try:
        for part in attribute.split("."):
            app = getattr(app, part)
    except AttributeError as exc:
        raise AppLoadError(f'attribute "{attribute}" not found in module "{module_name}"') from exc
    return app  # type: ignore[return-value]
