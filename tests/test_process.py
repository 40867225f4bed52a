"""Process liveness by pid and start time (bcd._process), shared by jobs, tuning and slides."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bcd._process import is_alive, process_start_time


def test_this_process_is_alive_under_its_own_start_time() -> None:
    started = process_start_time()
    assert started is not None and started <= time.time()
    assert is_alive(os.getpid(), started)


def test_a_reused_pid_with_another_start_time_is_not_the_same_process() -> None:
    started = process_start_time()
    assert started is not None
    assert not is_alive(os.getpid(), started - 3600.0)
    assert not is_alive(os.getpid(), started + 5.0)
    assert is_alive(os.getpid(), None)


@pytest.mark.parametrize("reaped", [False, True], ids=["zombie", "reaped"])
def test_an_ended_process_is_not_alive(reaped: bool) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(child.pid)
    assert started is not None
    deadline = time.monotonic() + 30
    # Not reaped yet, the ended child is a zombie: it must count as dead.
    while time.monotonic() < deadline and is_alive(child.pid, started):
        time.sleep(0.05)
    assert not is_alive(child.pid, started)
    child.wait()
    if reaped:
        assert not is_alive(child.pid, started)
        assert process_start_time(child.pid) is None


def test_no_pid_is_never_alive() -> None:
    assert not is_alive(None, None)
    assert not is_alive(None, 1.0)
