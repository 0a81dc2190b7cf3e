"""`reqtrace run --server uvicorn APP [uvicorn's flags]`: the user's uvicorn, hooked and paced.

In the server child (tracer/session/server_child.py), under the app's interpreter:

1. uvicorn's own command line parses the flags (its click command, with `uvicorn.main.run`
   caught for a moment): every flag means what it means to uvicorn, in that version.
2. The hooked protocol for the chosen `--http` (uvicorn_support.py) goes in through
   `Config(http=...)`, and the socket the tracer bound through `Config(fd=...)`. A version
   or protocol reqtrace does not hook is served unchanged, and the tracer is told why
   (`hooks_off`): it traces from the kernel only.
3. uvicorn's own `run()` does the rest, with `uvicorn.main.Server` replaced by a subclass
   that adds the milestones of a run: the app imported (then wait for the tracer's go),
   serving (after lifespan startup: the ServerStarted record), no longer accepting.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tracer.hosted.hook_state import HostedHooks, current, install
from tracer.hosted.uvicorn_support import NEWEST_TESTED, hooked_protocol, show, version_tuple
from tracer.server.hook_channel import HookChannelWriter

logger = logging.getLogger("uvicorn.error")
EXIT_USAGE = 2


class Milestones(Protocol):
    """What the server child wants to know (tracer/session/server_child.py's ChildRun)."""

    def app_loaded(self) -> int | None: ...  # blocks until the go; an exit code to stop
    def started(self) -> None: ...
    def stop_accepting(self, connections: int) -> None: ...
    def hooks_off(self, reason: str) -> None: ...


@dataclass(frozen=True)
class LoadError:
    missing_module: str  # the dependency the app could not import


class ServerOwner:
    """Who runs uvicorn's Server here: the milestones to tell, the server once made."""

    def __init__(self, milestones: Milestones) -> None:
        self.milestones = milestones
        self.server: Any = None  # uvicorn's Server, once made
        self.stop_early = False  # asked to stop before the server was made


class HostedUvicorn(ServerOwner):
    """The user's uvicorn in this process, with the interface ChildRun drives."""

    def __init__(
        self,
        argv: Sequence[str],
        listen_fd: int,
        hook_fd: int | None,
        milestones: Milestones,
        capture_headers: bool = True,
    ) -> None:
        super().__init__(milestones)
        self.argv = list(argv)
        self.listen_fd = listen_fd
        self.hook_fd = hook_fd
        self.capture_headers = capture_headers
        self.load_error: LoadError | None = None
        self.description = "uvicorn"  # e.g. "uvicorn 0.55.0 (httptools)", once known

    def run(self, install_signal_handlers: bool = True) -> int:
        """Parse the flags, serve until stopped; the exit status (uvicorn's: 3 lifespan)."""
        parsed = parse_uvicorn_flags(self.argv)
        if isinstance(parsed, int):
            return parsed
        app, options = parsed
        import uvicorn

        uvicorn_main = uvicorn_main_module()
        if options.get("reload") or (options.get("workers") or 1) > 1:
            logger.error(
                "reqtrace traces one uvicorn process: --reload and --workers are not"
                " supported (use --server gunicorn -w N -k uvicorn.workers.UvicornWorker)"
            )
            return EXIT_USAGE
        protocol, why_not = hooked_protocol(options.get("http", "auto"), uvicorn.__version__)
        chosen = protocol.__name__ if protocol else options.get("http", "auto")
        self.description = f"uvicorn {uvicorn.__version__} ({protocol_name(chosen)})"
        writer = None
        if protocol is None:
            self.milestones.hooks_off(why_not)
        else:
            if version_tuple(uvicorn.__version__) > NEWEST_TESTED:
                logger.info(
                    "reqtrace: uvicorn %s is newer than the newest tested (%s)",
                    uvicorn.__version__,
                    show(NEWEST_TESTED),
                )
            if self.hook_fd is not None:
                writer = HookChannelWriter(self.hook_fd)
                install(HostedHooks(writer.emit_wire, self.capture_headers))
            options["http"] = protocol
        options["fd"] = self.listen_fd
        saved = uvicorn_main.Server
        uvicorn_main.Server = traced_server_class(self)
        try:
            uvicorn_main.run(app, **options)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except ModuleNotFoundError as exc:  # one of the app's own dependencies
            self.load_error = LoadError(exc.name or "")
            logger.error("Error loading ASGI app: %s\n%s", exc, traceback.format_exc())
            return 1
        finally:
            uvicorn_main.Server = saved
            install(None)
            if writer is not None:
                writer.close()
        return 0

    def request_shutdown(self, force: bool = False) -> None:
        """From any thread: uvicorn's main loop looks at these flags ten times a second."""
        server = self.server
        if server is None:
            self.stop_early = True
            return
        server.should_exit = True
        if force:
            server.force_exit = True


def parse_uvicorn_flags(argv: Sequence[str]) -> tuple[Any, dict[str, Any]] | int:
    """(app, run() keyword arguments) as uvicorn's own command line makes them; or the exit
    status when it only printed something (--help, --version) or refused the flags."""
    import click

    uvicorn_main = uvicorn_main_module()
    caught: dict[str, Any] = {}

    def catch(app: Any, **options: Any) -> None:
        caught["app"], caught["options"] = app, options

    saved = uvicorn_main.run
    uvicorn_main.run = catch
    try:
        status = uvicorn_main.main.main(
            args=list(argv), prog_name="reqtrace run --server uvicorn", standalone_mode=False
        )
    except click.ClickException as exc:
        exc.show(file=sys.stderr)
        return EXIT_USAGE
    except click.exceptions.Abort:
        return EXIT_USAGE
    finally:
        uvicorn_main.run = saved
    if "app" not in caught:
        return status if isinstance(status, int) else 0
    return caught["app"], caught["options"]


def protocol_name(http: Any) -> str:
    """httptools, h11, or what the user gave (a name, or a class)."""
    name = http if isinstance(http, str) else getattr(http, "__name__", str(http))
    return {"TracedHttpToolsProtocol": "httptools", "TracedH11Protocol": "h11"}.get(name, name)


def uvicorn_main_module() -> Any:
    """The module uvicorn.main (`uvicorn.main` the attribute is its click command)."""
    return importlib.import_module("uvicorn.main")


def traced_server_class(owner: ServerOwner) -> type[Any]:
    """uvicorn's Server with the milestones of a run (made on use: uvicorn is the user's)."""
    from uvicorn.server import Server

    class TracedServer(Server):
        def run(self, sockets: Any = None) -> None:
            owner.server = self
            if not self.config.loaded:
                self.config.load()  # the app's import, as uvicorn does it
            code = owner.milestones.app_loaded()
            if code is not None:
                raise SystemExit(code)
            if owner.stop_early:
                self.should_exit = True
            return super().run(sockets=sockets)

        async def startup(self, sockets: Any = None) -> None:
            owner.server = self
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                hooks = current()
                if hooks is not None:  # connections queued meanwhile waited until now
                    hooks.server_started()
                owner.milestones.started()

        async def shutdown(self, sockets: Any = None) -> None:
            for server in getattr(self, "servers", ()):
                server.close()  # uvicorn does it first thing too; closing twice is fine
            owner.milestones.stop_accepting(len(self.server_state.connections))
            await super().shutdown(sockets=sockets)

    return TracedServer
