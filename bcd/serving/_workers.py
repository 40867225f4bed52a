"""Multi-process serving: ``bcd serve --workers N``.

One parent process does the one-time work (settings, migrations, marking
interrupted slide analyses failed), then hands the port to uvicorn's
supervisor, which binds it once and spawns ``N`` worker processes that accept
on the shared socket and restarts any that dies. Each worker builds its own
app with :func:`worker_app`: its own event loop, endpoint router and ONNX
Runtime sessions, with ``cores // N`` intra-op threads.

State that must hold for the whole server lives outside the workers:
Prometheus series in a private ``PROMETHEUS_MULTIPROC_DIR`` that the parent
creates and removes, invocation totals in the registry (each worker adds its
own deltas), slide analyses and endpoints in the metadata store.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bcd.config import Settings
from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: Environment variable that hands the parent's settings to the workers.
WORKER_CONFIG_ENV = "BCD_SERVE_WORKER_CONFIG"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_FACTORY = "bcd.serving._workers:worker_app"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def uvicorn_options(settings: Settings, access_log: bool) -> dict[str, Any]:
    """The ``uvicorn.run`` options of ``bcd serve``, for one process or several."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "access_log": access_log,
        "timeout_keep_alive": 5,
        "server_header": False,
    }


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
        InvalidInputError: ``workers`` is below 2.
    """
    import uvicorn

    from bcd.slides import recover_interrupted_analyses

    if workers < 2:
        raise InvalidInputError(f"serve_workers needs at least 2 workers, not {workers}")
    # Once, before any worker runs: a worker's own check skips live processes.
    recover_interrupted_analyses(settings)
    metrics_dir = tempfile.mkdtemp(prefix="bcd-metrics-")
    config = {
        "settings": settings.model_dump(mode="json"),
        "only": sorted(only) if only else None,
        "workers": workers,
    }
    saved = {name: os.environ.get(name) for name in (WORKER_CONFIG_ENV, _MULTIPROC_ENV)}
    # Spawned workers inherit the environment.
    os.environ[WORKER_CONFIG_ENV] = json.dumps(config)
    os.environ[_MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            _FACTORY, factory=True, workers=workers, **uvicorn_options(settings, access_log)
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls this factory in each worker).

    Returns:
        A FastAPI app built from the settings the parent put in
        ``BCD_SERVE_WORKER_CONFIG``.

    Raises:
        InvalidInputError: The variable is missing (not started by :func:`serve_workers`).
    """
    from bcd.serving._runtime import available_cores
    from bcd.serving.app import create_app

    raw = os.environ.get(WORKER_CONFIG_ENV)
    metrics_dir = os.environ.get(_MULTIPROC_ENV)
    if not raw or not metrics_dir:
        raise InvalidInputError(
            f"{WORKER_CONFIG_ENV} and {_MULTIPROC_ENV} are unset; start workers with "
            "`bcd serve --workers N`"
        )
    config = json.loads(raw)
    settings = Settings.model_validate(config["settings"])
    workers = int(config["workers"])
    logging.getLogger("bcd").setLevel(settings.log_level.upper())
    forget_dead_workers(Path(metrics_dir))
    only = set(config["only"]) if config.get("only") else None
    return create_app(
        settings,
        only=only,
        cores=max(1, available_cores() // workers),
        multiprocess_metrics=True,
    )


def forget_dead_workers(metrics_dir: Path) -> int:
    """Drop the live-gauge files of worker processes that no longer run.

    Counters and histograms of a dead worker stay (the server's totals keep
    what it counted); its gauges must not.

    Returns:
        How many processes' gauges were dropped.
    """
    from prometheus_client import multiprocess

    dead: set[int] = set()
    for path in metrics_dir.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _pid_running(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(metrics_dir))
    if dead:
        logger.info("dropped the gauges of %d stopped worker(s)", len(dead))
    return len(dead)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
