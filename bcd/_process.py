"""Is this still the process we started? Liveness by pid *and* process start time.

Job supervisors, tuning drivers and slide analyses record the pid of the
process doing the work together with that process's start time. A pid alone
is not enough: after a crash or a reboot the number may belong to an
unrelated process. Comparing the start time as well rules that out. Used by
``bcd.jobs``, ``bcd.tuning`` and ``bcd.slides`` to find work left behind by a
dead process.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: This process's Linux autogroup file (see :func:`keep_caller_priority`).
AUTOGROUP = Path("/proc/self/autogroup")

#: Start times recorded and read back (rounded, or via another clock source)
#: may differ by a fraction of a second; a reused pid starts much later.
START_TIME_TOLERANCE_S = 1.0


def process_start_time(pid: int | None = None) -> float | None:
    """When process ``pid`` (default: this one) started, in seconds since the epoch.

    Returns:
        The start time, or ``None`` when no such process exists.
    """
    import psutil

    try:
        return float(psutil.Process(os.getpid() if pid is None else pid).create_time())
    except psutil.Error:
        return None


def is_alive(pid: int | None, start_time: float | None) -> bool:
    """Whether process ``pid`` that started at ``start_time`` still runs.

    Args:
        pid: The recorded process id; ``None`` means there was none (not alive).
        start_time: Its recorded start time (seconds since the epoch); ``None``
            accepts any process with that pid.

    Returns:
        False when the pid is gone, is a zombie (ended, not yet reaped), or
        belongs to a process that started at another time.
    """
    import psutil

    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = process.create_time()
    except psutil.Error:
        return False
    return start_time is None or abs(started - start_time) < START_TIME_TOLERANCE_S


def keep_caller_priority(autogroup: Path = AUTOGROUP) -> int:
    """Give this session's CPU scheduling group the niceness the process inherited.

    Job supervisors (with the jobs' processes) and tuning drivers run in a
    session of their own. Under
    Linux's autogroup scheduling (``kernel.sched_autogroup_enabled=1``) every
    session is a CPU group of its own at nice 0, and a process's niceness only
    counts against others of its group: ``nice -n 19 bcd train …`` would then
    compete with the rest of the machine at full weight. Setting the group's
    niceness keeps a niced job or tuning driver niced. Best effort: nothing happens without
    ``/proc/self/autogroup`` or when the kernel refuses.

    Args:
        autogroup: The autogroup file of this process.

    Returns:
        The niceness the group was given, or 0 when left alone.
    """
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness <= 0 or not autogroup.exists():
        return 0
    for _ in range(3):
        try:
            autogroup.write_text(f"{niceness}\n")
            return niceness
        except BlockingIOError:
            time.sleep(0.15)  # the kernel allows one change per 100 ms machine-wide
        except OSError as error:
            logger.info(
                "could not set this session's scheduling group to nice %d: %s", niceness, error
            )
            return 0
    return 0
