"""Reading a job's log, whole or followed live."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from bcd.config import Settings
from bcd.jobs import _store
from bcd.jobs._launcher import JOB_LOG


def log_path(name: str, settings: Settings) -> Path:
    """The job log of ``name`` (it may not exist yet while the job starts).

    Raises:
        NotFoundError: No such job.
    """
    return Path(_store.get_job(name, settings).workdir) / JOB_LOG


def read_log(name: str, settings: Settings, tail: int | None = None) -> list[str]:
    """The lines of a job's log so far (the last ``tail`` when given).

    Raises:
        NotFoundError: No such job.
    """
    path = log_path(name, settings)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = deque(handle, maxlen=tail) if tail else list(handle)
    return [line.rstrip("\n") for line in lines]


def follow_log(name: str, settings: Settings, poll_s: float = 0.5) -> Iterator[str]:
    """Yield a job's log lines as they are written, until the job has ended.

    Starts from the first line; ends once the job is in a terminal status and
    the log has been read to its end.

    Raises:
        NotFoundError: No such job.
    """
    path = log_path(name, settings)
    position = 0
    pending = ""
    while True:
        ended = _store.get_job(name, settings).status in _store.TERMINAL
        if path.is_file():
            with open(path, encoding="utf-8", errors="replace") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            pending += chunk
            *lines, pending = pending.split("\n")
            yield from lines
        if ended:
            if pending:
                yield pending
            return
        time.sleep(poll_s)
