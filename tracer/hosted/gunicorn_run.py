"""`reqtrace run --server gunicorn APP [gunicorn's flags]`: the user's gunicorn, its workers hooked.

In the server child, under the app's interpreter, this process becomes gunicorn's master:

1. gunicorn's own WSGIApplication parses the flags (and --config, $GUNICORN_CMD_ARGS), as
   `gunicorn` would; then two settings are replaced: `bind` by the socket the tracer bound
   (`fd://N`), `worker_class` by a subclass of the chosen uvicorn worker whose uvicorn
   serves the hooked protocol (gunicorn_worker.py). gunicorn's default sync worker cannot
   serve an ASGI app: without -k, uvicorn.workers.UvicornWorker is used.
2. Milestone "imported" once the configuration is read (with --preload, once the app is
   imported too), then wait for the tracer's go, then gunicorn's Arbiter runs: it forks
   the workers, which say "serving PID" themselves.
3. Stop: "stop" is gunicorn's SIGTERM (graceful, --graceful-timeout), "force" its SIGQUIT;
   the tracer's death its SIGQUIT too (the parent-death signal; SIGHUP would make gunicorn
   reload).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from tracer.hosted import gunicorn_worker
from tracer.hosted.uvicorn_server import LoadError, Milestones, protocol_name
from tracer.hosted.uvicorn_support import hooked_protocol

DEFAULT_WORKER = "uvicorn.workers.UvicornWorker"
PARENT_DEATH_SIGNAL = signal.SIGQUIT
logger = logging.getLogger("reqtrace.server")


class HostedGunicorn:
    """gunicorn's master in this process, with the interface ChildRun drives."""

    def __init__(
        self,
        argv: Sequence[str],
        listen_fd: int,
        hook_fd: int | None,
        milestones: Milestones,
        capture_headers: bool = True,
    ) -> None:
        self.argv = list(argv)
        self.listen_fd = listen_fd
        self.hook_fd = hook_fd
        self.milestones = milestones
        self.capture_headers = capture_headers
        self.load_error: LoadError | None = None
        self.description = "gunicorn"  # e.g. "gunicorn 27.0.1, uvicorn 0.55.0 workers"
        self.app_imported = False  # only with --preload: else each worker imports it
        self._running = False

    def run(self, install_signal_handlers: bool = True) -> int:
        import gunicorn
        from gunicorn.app.wsgiapp import WSGIApplication

        sys.argv = ["gunicorn", *self.argv]
        try:
            application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
        except SystemExit as exc:  # gunicorn's parser said what was wrong (or --help)
            return exc.code if isinstance(exc.code, int) else 2
        cfg = application.cfg
        if cfg.settings["worker_class"].get() == "sync":  # gunicorn's default: not ASGI
            cfg.set("worker_class", DEFAULT_WORKER)
        try:
            base = cfg.worker_class
        except Exception as exc:  # the class named by -k cannot be imported
            logger.error("reqtrace: gunicorn's worker class: %s", exc)
            return 2
        import uvicorn

        http = dict(getattr(base, "CONFIG_KWARGS", {})).get("http", "auto")
        protocol, why_not = hooked_protocol(http, uvicorn.__version__)
        self.description = (
            f"gunicorn {gunicorn.__version__}, {cfg.workers} x {base.__module__}.{base.__name__}"
            f" (uvicorn {uvicorn.__version__}, {protocol_name(protocol or http)})"
        )
        if protocol is None:
            self.milestones.hooks_off(why_not)
        cfg.set("worker_class", gunicorn_worker.traced_worker_class(base, protocol))
        cfg.set("bind", [f"fd://{self.listen_fd}"])
        status_fd = getattr(getattr(self.milestones, "status", None), "fd", -1)
        gunicorn_worker.SETTINGS = gunicorn_worker.WorkerSettings(
            hook_fd=self.hook_fd if protocol is not None else None,
            status_fd=status_fd,
            ack_dir=os.environ.pop("REQTRACE_WORKER_ACK_DIR", ""),
            capture_headers=self.capture_headers,
        )
        if cfg.preload_app:
            try:
                application.wsgi()
            except ModuleNotFoundError as exc:
                self.load_error = LoadError(exc.name or "")
                logger.error("Error loading ASGI app: %s\n%s", exc, traceback.format_exc())
                return 1
            self.app_imported = True
        code = self.milestones.app_loaded()
        if code is not None:
            return code
        setattr(self.milestones, "serving", True)  # noqa: B010 (the master serves from now)
        self._running = True
        try:
            application.run()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        return 0

    def request_shutdown(self, force: bool = False) -> None:
        """gunicorn's own signals: SIGTERM graceful, SIGQUIT quick (from any thread)."""
        if not self._running:
            return
        os.kill(os.getpid(), signal.SIGQUIT if force else signal.SIGTERM)
