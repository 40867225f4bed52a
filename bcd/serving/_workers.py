"""Multi-process serving: ``bcd serve --workers N``.

One parent process does the one-time work (settings, migrations, marking
interrupted slide analyses failed), imports what every worker needs (FastAPI,
the routes, SQLAlchemy, NumPy, Pillow), binds the port once and then forks
``N`` worker processes that accept on the shared socket. Forking after the
imports means a worker starts in a fraction of a second instead of repeating
them; ONNX Runtime is imported by each worker after the fork, since it starts
a thread of its own on import. The parent supervises: it restarts a worker
that dies, turns Ctrl-C or ``SIGTERM`` into one ``SIGTERM`` per worker (each
shuts down gracefully, finishing its requests), and stops if workers keep
failing.

Each worker builds its own app with :func:`worker_app`: its own event loop,
endpoint router and ONNX Runtime sessions. State that must hold for the whole
server lives outside the workers: Prometheus series in a private
``PROMETHEUS_MULTIPROC_DIR`` that the parent creates and removes, invocation
totals in the registry (each worker adds its own deltas), slide analyses and
endpoints in the metadata store.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from bcd.config import Settings
from bcd.errors import BcdError, InvalidInputError

logger = logging.getLogger(__name__)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")
#: uvicorn's exit status for a server that could not start (its lifespan failed).
_STARTUP_FAILURE = 3
#: A worker that dies this many times within :data:`_CRASH_WINDOW_S` stops the server.
_MAX_CRASHES = 5
_CRASH_WINDOW_S = 60.0
#: How long stopping waits for workers to finish before killing them.
_STOP_GRACE_S = 30.0


class WorkersFailedError(BcdError):
    """Server workers kept stopping, so ``bcd serve --workers N`` stopped."""


def uvicorn_options(settings: Settings, access_log: bool) -> dict[str, Any]:
    """The ``uvicorn.run`` options of ``bcd serve``, for one process or several.

    Connections get ``header_timeout_s`` to send each request head
    (:mod:`bcd.serving._connections`), ``keep_alive_s`` of silence between
    requests, and past ``max_connections`` open connections (or requests in
    flight) uvicorn answers new requests ``503``.
    """
    from bcd.serving._connections import head_timeout_protocol

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "access_log": access_log,
        "http": head_timeout_protocol(settings.header_timeout_s),
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections,
        "server_header": False,
    }


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker process serves: the parent's settings and choices."""

    settings: Settings
    only: set[str] | None = None
    access_log: bool = False


def serve_workers(
    settings: Settings, workers: int, *, only: set[str] | None = None, access_log: bool = False
) -> None:
    """Run ``workers`` server processes on ``settings.host:settings.port`` until stopped.

    Args:
        settings: The server's settings (as ``bcd serve`` resolved them); the
            workers receive exactly these.
        workers: Number of server processes (at least 2; one process is
            ``uvicorn.run(create_app(...))``).
        only: Serve only these endpoint names.
        access_log: Log every request line (no bodies).

    Raises:
        InvalidInputError: ``workers`` is below 2, or this platform cannot fork.
        WorkersFailedError: Workers kept failing (the log says why), so the server stopped.
    """
    import uvicorn

    from bcd.slides import recover_interrupted_analyses

    if workers < 2:
        raise InvalidInputError(f"serve_workers needs at least 2 workers, not {workers}")
    if not hasattr(os, "fork"):
        raise InvalidInputError("--workers above 1 needs os.fork (Linux or macOS); use one process")
    # Once, before any worker runs: a worker's own check skips live processes.
    recover_interrupted_analyses(settings)
    spec = WorkerSpec(settings=settings, only=only, access_log=access_log)
    metrics_dir = tempfile.mkdtemp(prefix="bcd-metrics-")
    saved = os.environ.get(_MULTIPROC_ENV)
    os.environ[_MULTIPROC_ENV] = metrics_dir
    try:
        _import_shared_modules()
        config = uvicorn.Config(_no_app, **uvicorn_options(settings, access_log))
        config.load()  # imports uvicorn's protocol, loop and lifespan modules
        listener = config.bind_socket()
        try:
            Supervisor(lambda: _fork_worker(spec, listener), workers).run()
        finally:
            listener.close()
    finally:
        if saved is None:
            os.environ.pop(_MULTIPROC_ENV, None)
        else:
            os.environ[_MULTIPROC_ENV] = saved
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    """The parent's uvicorn config only binds the socket; it never serves."""
    raise RuntimeError("the supervisor process does not serve requests")


def _import_shared_modules() -> None:
    """Import, once in the parent, the modules every worker needs (all but ONNX Runtime)."""
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401

    import bcd.serving.app
    import bcd.slides  # noqa: F401
    from bcd.registry import _tables  # noqa: F401


def _fork_worker(spec: WorkerSpec, listener: socket.socket) -> int:
    """Start one worker process; returns its pid (in the parent)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    _worker_main(spec, listener)


def _worker_main(spec: WorkerSpec, listener: socket.socket) -> NoReturn:
    """The whole life of a forked worker; never returns into the parent's code."""
    status = 1
    try:
        # The parent's handlers must not run here; uvicorn installs the worker's own.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        import uvicorn

        app = worker_app(spec)
        options = uvicorn_options(spec.settings, spec.access_log)
        server = _worker_server(uvicorn.Config(app, **options))
        try:
            server.run(sockets=[listener])
            status = 0 if server.started else _STARTUP_FAILURE
        except SystemExit as stop:  # uvicorn exits this way when the app cannot start
            status = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        logger.exception("serving worker %d failed", os.getpid())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _worker_server(config: Any) -> Any:
    """A worker's uvicorn server: it stops on ``SIGTERM`` from the supervisor only.

    A Ctrl-C in a terminal reaches the whole process group; the supervisor
    turns it into one ``SIGTERM`` per worker, so a worker ignores ``SIGINT``
    (a second ``SIGTERM`` makes uvicorn stop without waiting).
    """
    import uvicorn

    class WorkerServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if sig != signal.SIGINT:
                super().handle_exit(sig, frame)

    return WorkerServer(config)


def worker_app(spec: WorkerSpec) -> Any:
    """The app of one worker process, built in the worker after the fork.

    Returns:
        A FastAPI app whose ``/metrics`` sums every worker's series.
    """
    from prometheus_client import values

    from bcd.db import forget_engines
    from bcd.serving.app import create_app

    # Connections and Prometheus values made by the parent belong to the parent.
    forget_engines()
    values.ValueClass = values.get_value_class()
    logging.getLogger("bcd").setLevel(spec.settings.log_level.upper())
    forget_dead_workers(Path(os.environ[_MULTIPROC_ENV]))
    return create_app(spec.settings, only=spec.only, multiprocess_metrics=True)


class Supervisor:
    """Keeps ``workers`` processes running until ``SIGINT``/``SIGTERM``, then stops them.

    Args:
        start: Starts one worker process and returns its pid.
        workers: How many to keep running.
        reap: Returns ``(pid, status)`` of a stopped child, or ``(0, 0)`` if none
            (default ``os.waitpid(-1, os.WNOHANG)``).
    """

    def __init__(
        self,
        start: Callable[[], int],
        workers: int,
        *,
        reap: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self._start = start
        self._workers = workers
        self._reap = reap or (lambda: os.waitpid(-1, os.WNOHANG))
        self._running: set[int] = set()
        self._crashes: deque[float] = deque()
        self._stop = threading.Event()
        self._signals = 0
        self.failure: str | None = None

    def request_stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        """Stop the workers (a signal handler; a second call stops them at once)."""
        self._signals += 1
        if self._signals > 1:
            self._signal_workers(signal.SIGTERM)
        self._stop.set()

    def run(self) -> None:
        """Start the workers and supervise them; returns once all have stopped.

        Raises:
            WorkersFailedError: Workers kept failing, so the supervisor stopped them.
        """
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.request_stop) for sig in handled}
        try:
            for _ in range(self._workers):
                pid = self._start()
                self._running.add(pid)
                logger.info("started worker process %d", pid)
            while not self._stop.wait(0.2):
                self._replace_stopped()
        finally:
            self._signal_workers(signal.SIGTERM)
            self._wait_for_workers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.failure:
            raise WorkersFailedError(self.failure)

    def _replace_stopped(self) -> None:
        for pid, status in self._stopped_children():
            code = os.waitstatus_to_exitcode(status)
            logger.warning("worker process %d stopped (exit status %d)", pid, code)
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > _CRASH_WINDOW_S:
                self._crashes.popleft()
            if code == _STARTUP_FAILURE:
                self.failure = "a worker could not start its app; see the log above"
            elif len(self._crashes) >= _MAX_CRASHES:
                self.failure = (
                    f"workers stopped {len(self._crashes)} times within "
                    f"{_CRASH_WINDOW_S:.0f} s; see the log above"
                )
            if self.failure:
                logger.error("stopping the server: %s", self.failure)
                self._stop.set()
                return
            pid = self._start()
            self._running.add(pid)
            logger.info("started worker process %d in its place", pid)

    def _stopped_children(self) -> list[tuple[int, int]]:
        stopped = []
        while self._running:
            try:
                pid, status = self._reap()
            except ChildProcessError:
                self._running.clear()
                break
            if pid == 0:
                break
            if pid in self._running:
                self._running.discard(pid)
                stopped.append((pid, status))
        return stopped

    def _signal_workers(self, sig: int) -> None:
        for pid in list(self._running):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                self._running.discard(pid)

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + _STOP_GRACE_S
        while self._running:
            self._stopped_children()
            if not self._running:
                break
            if time.monotonic() > deadline:
                logger.warning("killing %d worker(s) that did not stop", len(self._running))
                self._signal_workers(signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)


def forget_dead_workers(metrics_dir: Path) -> int:
    """Drop the live-gauge files of worker processes that no longer run.

    Counters and histograms of a dead worker stay (the server's totals keep
    what it counted); its gauges must not.

    Returns:
        How many processes' gauges were dropped.
    """
    from prometheus_client import multiprocess

    from bcd._process import is_alive

    dead: set[int] = set()
    for path in metrics_dir.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not is_alive(int(match.group(1)), None):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(metrics_dir))
    if dead:
        logger.info("dropped the gauges of %d stopped worker(s)", len(dead))
    return len(dead)
