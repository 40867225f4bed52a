"""The executor contract (bcd.jobs.executors), run against every executor.

Each test reserves placements and starts tiny Python processes directly through
the executor, the way the supervisor does; tests/jobs/test_engine.py runs whole
jobs on every executor.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.errors import InvalidInputError
from bcd.jobs._spec import JobSpec
from bcd.jobs.executors import (
    EXECUTORS,
    BaseExecutor,
    BaseInstance,
    get_executor,
    stop_instances,
)


class Lines:
    """Collects ``on_line`` callbacks: ``(host, line, is_stderr)``."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, instance: BaseInstance, line: str, is_stderr: bool) -> None:
        with self._lock:
            self.items.append((instance.host, line, is_stderr))


def _spec(instance_count: int = 1) -> JobSpec:
    return JobSpec(
        name="executor-test",
        algorithm="script",
        hyperparameters={},
        metric_definitions=[],
        channels=[],
        instance_count=instance_count,
    )


def _wait_ended(instance: BaseInstance, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while instance.returncode is None:
        assert time.monotonic() < deadline, f"{instance.host} did not end in {timeout_s} s"
        time.sleep(0.05)
    return instance.returncode


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest, bcd_home: Path) -> Iterator[BaseExecutor]:
    """A fresh executor of each kind (``ray`` on the session's local cluster)."""
    name = str(request.param)
    address = request.getfixturevalue("ray_address") if name == "ray" else None
    made = get_executor(name, Settings(home=bcd_home, executor=name, ray_address=address))
    yield made
    made.close()


def test_placements_name_hosts_ranks_and_a_master(executor: BaseExecutor) -> None:
    placements = executor.reserve(_spec(instance_count=2), cancelled=lambda: False)
    assert placements is not None
    assert [(p.rank, p.host) for p in placements] == [(0, "algo-1"), (1, "algo-2")]
    assert all(p.num_cpus >= 1 and p.num_gpus >= 0 and p.node for p in placements)
    primary = placements[0]
    assert primary.address and 0 < primary.master_port < 65536
    described = primary.describe(executor.name)
    assert described["Executor"] == executor.name and described["Host"] == "algo-1"


def test_output_lines_arrive_in_order_then_the_exit_code(
    executor: BaseExecutor, tmp_path: Path
) -> None:
    [placement] = executor.reserve(_spec(), cancelled=lambda: False) or []
    code = (
        "import os, sys\n"
        "for i in range(200): print(f'line {i}')\n"
        "print('to stderr', file=sys.stderr)\n"
        "print('cwd', os.getcwd(), os.environ['MARK'])\n"
        "sys.exit(3)\n"
    )
    lines = Lines()
    instance = executor.start(
        placement, [sys.executable, "-c", code], tmp_path, {"MARK": "seen", "PATH": ""}, lines
    )
    assert _wait_ended(instance) == 3
    instance.join_output(timeout=10)
    stdout = [line for host, line, is_stderr in lines.items if not is_stderr]
    assert stdout[:200] == [f"line {i}" for i in range(200)]
    assert stdout[200] == f"cwd {tmp_path} seen"
    assert ("algo-1", "to stderr", True) in lines.items


def test_stop_sends_sigterm_first_and_sigkill_after_the_grace_period(
    executor: BaseExecutor, tmp_path: Path
) -> None:
    placements = executor.reserve(_spec(instance_count=2), cancelled=lambda: False) or []
    polite = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('bye', flush=True), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    lines = Lines()
    instances = [
        executor.start(placement, [sys.executable, "-c", code], tmp_path, {}, lines)
        for placement, code in zip(placements, (polite, stubborn), strict=True)
    ]
    deadline = time.monotonic() + 30
    while sum(line == "ready" for _, line, _ in lines.items) < 2:
        assert time.monotonic() < deadline, lines.items
        time.sleep(0.05)
    started = time.monotonic()
    stop_instances(instances, grace_s=1.0)
    assert [instance.returncode for instance in instances] == [0, -signal.SIGKILL]
    assert 1.0 <= time.monotonic() - started < 20
    instances[0].join_output(timeout=10)
    assert ("algo-1", "bye", False) in lines.items


def test_an_unknown_executor_is_refused(bcd_home: Path) -> None:
    with pytest.raises(InvalidInputError, match="valid: local, ray"):
        get_executor("slurm", Settings(home=bcd_home))


def test_settings_refuse_an_unknown_executor(bcd_home: Path) -> None:
    with pytest.raises(ValueError, match="executor"):
        Settings(home=bcd_home, executor="slurm")  # type: ignore[arg-type]
