"""The tuning driver as a detached process, and telling whether a worker lives.

``bcd tune`` starts the driver (``python -m bcd.tuning drive NAME``) in its own
session with its output in ``$BCD_HOME/tuning/<name>/driver.log``, so the
command returns at once and the driver outlives it. A worker is named
``host/pid/start-time``: a pid reused after the driver died is never
mistaken for it.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from bcd._process import is_alive, process_start_time
from bcd.config import Settings
from bcd.db import utcnow

DRIVER_LOG = "driver.log"
# A worker on another machine whose heartbeat is older than this is presumed dead.
STALE_AFTER = dt.timedelta(seconds=60)


def tuning_dir(settings: Settings, name: str) -> Path:
    """``$BCD_HOME/tuning/<name>``: the tuning job's local folder (driver log)."""
    return settings.home / "tuning" / name


def this_worker() -> str:
    """The identity of this process as a tuning worker: ``host/pid/start-time``."""
    return f"{socket.gethostname()}/{os.getpid()}/{process_start_time() or 0.0:.2f}"


def worker_alive(worker: str, heartbeat: dt.datetime | None) -> bool:
    """Whether ``worker`` still runs: checked directly on this host, by heartbeat elsewhere."""
    host, _, rest = worker.partition("/")
    pid_text, _, start_text = rest.partition("/")
    if host != socket.gethostname():
        if heartbeat is None:
            return False
        heartbeat = heartbeat if heartbeat.tzinfo else heartbeat.replace(tzinfo=dt.UTC)
        return utcnow() - heartbeat < STALE_AFTER
    try:
        return is_alive(int(pid_text), float(start_text))
    except ValueError:
        return False


def driver_env(settings: Settings) -> dict[str, str]:
    """The driver's environment: the caller's, with the settings made explicit."""
    env = {**os.environ, **settings.child_env()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_driver(name: str, settings: Settings, *, worker: bool = False) -> int:
    """Start a detached driver (or extra worker) process for tuning job ``name``.

    Returns:
        The process id.
    """
    folder = tuning_dir(settings, name)
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bcd.tuning", "drive", name]
    if worker:
        command.append("--worker")
    with open(folder / DRIVER_LOG, "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=driver_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    # A long-lived caller (tests, a notebook) reaps the driver when it ends.
    threading.Thread(target=process.wait, daemon=True).start()
    return process.pid
