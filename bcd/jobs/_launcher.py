"""Starting a job's supervisor detached from the caller, and telling whether it lives.

The supervisor (``python -m bcd.jobs.supervisor NAME``) runs in its own session
(process group), with stdin closed and its output in the job folder, so the
caller may exit at once, and a crash of either side never takes the other down.
The supervisor is identified by its pid *and* its start time
(:mod:`bcd._process`), so a pid reused after a reboot is never mistaken for it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from bcd._process import is_alive, process_start_time
from bcd.config import Settings

SUPERVISOR_LOG = "supervisor.log"
JOB_LOG = "job.log"


def this_host() -> str:
    """The name under which this machine's jobs are recorded."""
    return socket.gethostname()


def job_dir(settings: Settings, name: str) -> Path:
    """``$BCD_HOME/jobs/<name>``: the job's working folder."""
    return settings.home / "jobs" / name


def supervisor_env(settings: Settings) -> dict[str, str]:
    """The environment of a supervisor: the caller's, with the settings made explicit."""
    env = {**os.environ, **settings.child_env()}
    env["BCD_JOB_STOP_GRACE_S"] = str(settings.job_stop_grace_s)
    env["BCD_JOB_SAMPLE_INTERVAL_S"] = str(settings.job_sample_interval_s)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _reap(process: subprocess.Popen[bytes]) -> None:
    process.wait()


def start_supervisor(name: str, workdir: Path, settings: Settings) -> tuple[int, float]:
    """Start the supervisor of job ``name`` in the background.

    Returns:
        ``(pid, start_time)`` identifying the supervisor process.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / SUPERVISOR_LOG, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bcd.jobs.supervisor", name],
            cwd=workdir,
            env=supervisor_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    # A long-lived caller (server, tuner) reaps the child when it ends, so no
    # zombie lingers; a caller that exits first hands it to init.
    threading.Thread(target=_reap, args=(process,), daemon=True).start()
    return process.pid, process_start_time(process.pid) or 0.0


def signal_process(pid: int | None, start_time: float | None, signum: int) -> bool:
    """Send ``signum`` to the process if it is the one we mean; whether it was sent."""
    if pid is None or not is_alive(pid, start_time):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def terminate(pid: int | None, start_time: float | None) -> bool:
    """SIGTERM the supervisor, which then stops the job gracefully."""
    return signal_process(pid, start_time, signal.SIGTERM)
