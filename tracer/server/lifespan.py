"""The ASGI lifespan protocol: tell the app when the server starts and stops.

The app runs once with a `lifespan` scope for the whole life of the server; it receives
`lifespan.startup` before the server listens and `lifespan.shutdown` after the last request.
The `state` dict it fills during startup is shallow-copied into every request's scope.

Modes (uvicorn's): "on" - the app must speak lifespan, an error exits; "auto" - an app that
raises before answering startup is taken not to support lifespan, and serving goes on;
"off" - never call it. A `lifespan.startup.failed` answer always stops the server (exit 3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from tracer.server.config import ASGIApp, LifespanMode

logger = logging.getLogger("reqtrace.server")

STARTUP_FAILURE_EXIT_CODE = 3  # uvicorn's code for "the app did not start"


class Lifespan:
    """Runs the app's lifespan task and waits for its answers."""

    def __init__(self, app: ASGIApp, mode: LifespanMode, state: dict[str, Any]) -> None:
        self._app = app
        self._mode = mode
        self.state = state
        self._messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._startup_done: asyncio.Future[None] | None = None
        self._shutdown_done: asyncio.Future[None] | None = None
        self._unsupported = False
        self.failed = False

    async def startup(self) -> bool:
        """Send lifespan.startup; True when the server may start serving."""
        if self._mode == "off":
            return True
        loop = asyncio.get_running_loop()
        self._startup_done = loop.create_future()
        self._shutdown_done = loop.create_future()
        logger.info("Waiting for application startup.")
        self._task = loop.create_task(self._run())
        await self._messages.put({"type": "lifespan.startup"})
        await self._startup_done
        if self.failed:
            logger.error("Application startup failed. Exiting.")
            return False
        if not self._unsupported:
            logger.info("Application startup complete.")
        return True

    async def shutdown(self, timeout: float) -> None:
        """Send lifespan.shutdown and wait (at most `timeout` s) for the app to finish."""
        if self._mode == "off" or self._unsupported or self._task is None or self.failed:
            return
        assert self._shutdown_done is not None
        logger.info("Waiting for application shutdown.")
        await self._messages.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self._shutdown_done), timeout)
        except TimeoutError:
            logger.error("Application shutdown did not finish in %.1f s.", timeout)
            self._task.cancel()
            return
        if self.failed:
            logger.error("Application shutdown failed.")
        else:
            logger.info("Application shutdown complete.")

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self._app(scope, self._receive, self._send)
        except BaseException as exc:
            started = self._startup_done is not None and self._startup_done.done()
            if self._mode == "auto" and not started:
                self._unsupported = True
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                self.failed = True
                logger.error("Exception in 'lifespan' protocol", exc_info=exc)
        finally:
            for done in (self._startup_done, self._shutdown_done):
                if done is not None and not done.done():
                    done.set_result(None)

    async def _receive(self) -> dict[str, str]:
        return await self._messages.get()

    async def _send(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        startup, shutdown = self._startup_done, self._shutdown_done
        assert startup is not None and shutdown is not None
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if startup.done():
                raise RuntimeError(f"Unexpected ASGI lifespan message {kind!r}.")
            if kind == "lifespan.startup.failed":
                self.failed = True
                if message.get("message"):
                    logger.error("%s", message["message"])
            startup.set_result(None)
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if not startup.done() or shutdown.done():
                raise RuntimeError(f"Unexpected ASGI lifespan message {kind!r}.")
            if kind == "lifespan.shutdown.failed":
                self.failed = True
                if message.get("message"):
                    logger.error("%s", message["message"])
            shutdown.set_result(None)
        else:
            raise RuntimeError(f"Unknown ASGI lifespan message {kind!r}.")
