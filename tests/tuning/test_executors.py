"""Tuning jobs on every executor: trials in parallel, pruning and stop work the same.

A contract suite: each test runs once with the ``local`` executor and once with
``ray`` (the session's local 2-CPU Ray cluster; skipped with a reason when Ray
is missing). Trials run tests/tuning/scripts/quick_train.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.jobs import TrainingJobService
from bcd.jobs.executors import EXECUTORS
from bcd.tuning import _store as tuning_store
from bcd.tuning import (
    create_tuning_job,
    describe_tuning_job,
    drive,
    list_trials,
    stop_tuning_job,
)
from tests.tuning.test_jobs import script_request


@pytest.fixture(params=EXECUTORS)
def executor_settings(request: pytest.FixtureRequest, bcd_home: Path) -> Settings:
    """Settings whose training jobs run on each executor in turn."""
    name = str(request.param)
    address = request.getfixturevalue("ray_address") if name == "ray" else None
    return Settings(home=bcd_home, executor=name, ray_address=address, job_stop_grace_s=3.0)


def _trials(name: str, settings: Settings) -> list[dict]:
    return list_trials(name, settings)


def _peak_concurrency(name: str, settings: Settings) -> int:
    rows = tuning_store.trials(name, settings)
    events = sorted([(row.started_at, 1) for row in rows] + [(row.ended_at, -1) for row in rows])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_parallel_trials_with_early_stopping_reach_a_best_job(
    executor_settings: Settings,
) -> None:
    settings = executor_settings
    request = script_request(
        "exec-tune", jobs=4, parallel=2, epochs=4, epoch_s=0.3, TrainingJobEarlyStoppingType="Auto"
    )
    create_tuning_job(request, settings, start=False)
    assert drive("exec-tune", settings) == "Completed"

    description = describe_tuning_job("exec-tune", settings)
    counters = description["TrainingJobStatusCounters"]
    assert counters["Completed"] + counters["Pruned"] == 4
    assert _peak_concurrency("exec-tune", settings) == 2
    service = TrainingJobService(settings)
    for trial in list_trials("exec-tune", settings):
        job = service.describe(trial["TrainingJobName"])
        assert job["Executor"]["Name"] == settings.executor
        assert [item["Host"] for item in job["Executor"]["Instances"]] == ["algo-1"]
    best = description["BestTrainingJob"]
    recorded = service.describe(best["TrainingJobName"])
    final = {item["MetricName"]: item["Value"] for item in recorded["FinalMetricDataList"]}
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == final["score"]


def test_stopping_a_tuning_job_stops_its_running_trials(executor_settings: Settings) -> None:
    settings = executor_settings
    request = script_request("exec-stop", jobs=4, parallel=2, epochs=200, epoch_s=0.2)
    create_tuning_job(request, settings, start=False)
    outcome: list[str] = []
    driver = threading.Thread(target=lambda: outcome.append(drive("exec-stop", settings)))
    driver.start()
    deadline = time.monotonic() + 90
    while sum(t["TrainingJobStatus"] == "InProgress" for t in _trials("exec-stop", settings)) < 2:
        assert time.monotonic() < deadline, "the trials did not start"
        time.sleep(0.2)
    stop_tuning_job("exec-stop", settings)
    driver.join(timeout=90)
    assert outcome == ["Stopped"]
    trials = list_trials("exec-stop", settings)
    assert len(trials) == 2
    assert {trial["TrainingJobStatus"] for trial in trials} == {"Stopped"}
