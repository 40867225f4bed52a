"""Import pool workers end with the import that started them.

A ``kill -9`` of ``bcd data import`` gives it no chance to stop its decode
workers, and they would block forever on their task queue (each holds a copy of
the queue's pipe, so none ever reads end-of-file). A worker therefore asks the
Linux kernel to send it ``SIGKILL`` when its parent dies (``prctl`` with
``PR_SET_PDEATHSIG``); where that is not available it polls its parent's pid
from a daemon thread instead.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: How often the fallback thread looks for its parent.
POLL_INTERVAL_S = 0.5


def _set_parent_death_signal(signal_number: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signal_number)``; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval_s)
    os._exit(1)  # the parent is gone: nobody will collect this worker's results


def die_with_parent(
    parent_pid: int, *, use_prctl: bool = True, interval_s: float = POLL_INTERVAL_S
) -> str:
    """Make this (worker) process end when process ``parent_pid`` ends.

    Call it first thing in a pool initializer, with the parent's pid taken
    before the pool started.

    Args:
        parent_pid: The pid of the process that started this one.
        use_prctl: Try ``PR_SET_PDEATHSIG`` first (Linux); False forces polling.
        interval_s: How often the polling fallback checks the parent.

    Returns:
        ``"prctl"`` or ``"poll"``: how this process is tied to its parent.
    """
    if use_prctl and _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent died before the signal was armed
        return "prctl"
    thread = threading.Thread(
        target=_watch_parent, args=(parent_pid, interval_s), name="bcd-lifeline", daemon=True
    )
    thread.start()
    return "poll"
