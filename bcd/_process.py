"""Is this still the process we started? Liveness by pid *and* process start time.

Job supervisors, tuning drivers and slide analyses record the pid of the
process doing the work together with that process's start time. A pid alone
is not enough: after a crash or a reboot the number may belong to an
unrelated process. Comparing the start time as well rules that out. Used by
``bcd.jobs``, ``bcd.tuning`` and ``bcd.slides`` to find work left behind by a
dead process.
"""

from __future__ import annotations

import os

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
