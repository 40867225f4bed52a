"""Fixtures for the job engine tests: fast settings, script folders, a data channel."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from bcd.config import Settings
from bcd.jobs import TERMINAL, TrainingJobService

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def executor_name() -> str:
    """The executor the jobs of a test run on; contract suites parametrize it over all."""
    return "local"


@pytest.fixture
def job_settings(bcd_home: Path, executor_name: str, request: pytest.FixtureRequest) -> Settings:
    """Settings with a short stop grace period and frequent instance samples.

    With ``executor_name == "ray"`` jobs run on the session's local Ray cluster.
    """
    ray_address = request.getfixturevalue("ray_address") if executor_name == "ray" else None
    return Settings(
        home=bcd_home,
        job_stop_grace_s=3.0,
        job_sample_interval_s=0.3,
        executor=executor_name,
        ray_address=ray_address,
    )


@pytest.fixture
def service(job_settings: Settings) -> TrainingJobService:
    """The job service on the test's BCD_HOME."""
    return TrainingJobService(job_settings)


@pytest.fixture
def train_dir(tmp_path: Path) -> Path:
    """A small channel folder (script-mode jobs only list it)."""
    folder = tmp_path / "train-data"
    folder.mkdir()
    for index in range(3):
        (folder / f"part-{index}.txt").write_text(str(index))
    return folder


@pytest.fixture
def script_request(train_dir: Path) -> Callable[..., dict[str, Any]]:
    """Build a script-mode ``create_training_job`` request for a script in tests/jobs/scripts."""

    def build(name: str, script: str, **overrides: Any) -> dict[str, Any]:
        hyperparameters = {
            "sagemaker_program": script,
            "sagemaker_submit_directory": str(SCRIPTS),
            **overrides.pop("hyperparameters", {}),
        }
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "AlgorithmName": "script",
                "TrainingInputMode": "File",
                "MetricDefinitions": [
                    {"Name": "train:loss", "Regex": r"train:loss=([0-9.]+)"},
                    {"Name": "validation:accuracy", "Regex": r"validation:accuracy=([0-9.]+)"},
                ],
            },
            "HyperParameters": hyperparameters,
            "InputDataConfig": [{"ChannelName": "train", "Uri": str(train_dir)}],
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": "local"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        }
        request.update(overrides)
        return request

    return build


def wait_until(
    service: TrainingJobService,
    name: str,
    predicate: Callable[[dict[str, Any]], bool] | None = None,
    timeout_s: float = 90.0,
) -> dict[str, Any]:
    """Poll ``describe`` until ``predicate`` holds (default: the job has ended)."""
    predicate = predicate or (lambda job: job["TrainingJobStatus"] in TERMINAL)
    deadline = time.monotonic() + timeout_s
    while True:
        description = service.describe(name)
        if predicate(description):
            return description
        if time.monotonic() > deadline:
            raise AssertionError(f"job {name} did not get there in {timeout_s} s: {description}")
        time.sleep(0.2)


@pytest.fixture
def wait(service: TrainingJobService) -> Callable[..., dict[str, Any]]:
    """``wait(name, predicate=None, timeout_s=90)``: see :func:`wait_until`."""

    def run(name: str, predicate: Any = None, timeout_s: float = 90.0) -> dict[str, Any]:
        return wait_until(service, name, predicate, timeout_s)

    return run


def instance_processes(job_name: str, script: str) -> list[psutil.Process]:
    """The running instance processes of a script-mode job (found by command and
    ``BCD_JOB_NAME``), wherever the executor started them on this machine."""
    found = []
    for process in psutil.process_iter():
        try:
            if any(part.endswith(script) for part in process.cmdline()) and (
                process.environ().get("BCD_JOB_NAME") == job_name
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def gone(process: psutil.Process) -> bool:
    """Whether the process has ended (a zombie counts as ended)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def running_instances(job_name: str, count: int) -> dict[str, psutil.Process]:
    """The job's ``run_forever.py`` instance processes by host, once all have started."""
    deadline = time.monotonic() + 20
    while True:
        found = {
            process.environ()["SM_CURRENT_HOST"]: process
            for process in instance_processes(job_name, "run_forever.py")
        }
        if len(found) == count:
            return found
        assert time.monotonic() < deadline, f"{count} instances of {job_name} not found: {found}"
        time.sleep(0.1)
