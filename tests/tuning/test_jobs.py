"""Real tuning jobs: detached drivers, real training jobs, a killed driver resumed, two workers.

Trials run tests/tuning/scripts/quick_train.py in script mode (well under a
second of "training" each), so the time here is the engine's process starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bcd.cli.main import main as cli_main
from bcd.config import Settings
from bcd.jobs import TrainingJobService
from bcd.tuning import (
    best_training_job,
    create_tuning_job,
    describe_tuning_job,
    list_trials,
    resume_tuning_job,
)
from bcd.tuning._process import driver_env

SCRIPTS = Path(__file__).parent / "scripts"


def script_request(
    name: str, *, jobs: int, parallel: int, epochs: int = 3, epoch_s: float = 0.1, **config: Any
) -> dict[str, Any]:
    tuning_config: dict[str, Any] = {
        "Strategy": "Bayesian",
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": jobs, "MaxParallelTrainingJobs": parallel},
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {
                    "Name": "learning_rate",
                    "MinValue": "0.0001",
                    "MaxValue": "1.0",
                    "ScalingType": "Logarithmic",
                }
            ],
            "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam"]}],
        },
        "RandomSeed": 11,
    }
    tuning_config.update(config)
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": tuning_config,
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "AlgorithmName": "script",
                "MetricDefinitions": [
                    {"Name": "score", "Regex": r"score=([0-9.eE+-]+)"},
                    {"Name": "accuracy", "Regex": r"accuracy=([0-9.]+)"},
                ],
            },
            "StaticHyperParameters": {
                "sagemaker_program": "quick_train.py",
                "sagemaker_submit_directory": str(SCRIPTS),
                "epochs": epochs,
                "epoch_seconds": epoch_s,
            },
        },
    }


def wait_for(predicate, timeout_s: float = 120.0, poll_s: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(poll_s)


def test_bcd_tune_runs_a_bayesian_job_with_early_stopping_to_a_best_job(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tune.yaml"
    request = script_request("cli-tune", jobs=4, parallel=2, TrainingJobEarlyStoppingType="Auto")
    config.write_text(yaml.safe_dump(request))
    with pytest.raises(SystemExit) as exited:
        cli_main(["tune", str(config), "--wait"])
    assert exited.value.code in (0, None)
    assert "best training job" in capsys.readouterr().out

    description = describe_tuning_job("cli-tune", settings)
    assert description["HyperParameterTuningJobStatus"] == "Completed"
    counters = description["TrainingJobStatusCounters"]
    assert counters["Completed"] + counters["Pruned"] == 4
    # Every trial is a real training job, tagged with its tuning job.
    jobs = TrainingJobService(settings).list_jobs(tuning_job_name="cli-tune")
    assert sorted(job["TrainingJobName"] for job in jobs) == sorted(
        trial["TrainingJobName"] for trial in list_trials("cli-tune", settings)
    )
    best = best_training_job("cli-tune", settings)
    recorded = TrainingJobService(settings).describe(best)
    value = {m["MetricName"]: m["Value"] for m in recorded["FinalMetricDataList"]}["score"]
    assert (
        description["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        == value
    )
    assert {"Key": "bcd:tuning-job", "Value": "cli-tune"} in recorded["Tags"]
    assert (
        recorded["HyperParameters"]["learning_rate"]
        == description["BestTrainingJob"]["TunedHyperParameters"]["learning_rate"]
    )

    plot = tmp_path / "progress.png"
    with pytest.raises(SystemExit):
        cli_main(["tuning-jobs", "plot", "cli-tune", "--out", str(plot)])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_killed_driver_resumes_to_the_full_count_without_repeating_trials(
    settings: Settings,
) -> None:
    create_tuning_job(
        script_request("resumed", jobs=3, parallel=1, epochs=4, epoch_s=0.4, Strategy="Random"),
        settings,
    )

    def running_second_trial() -> bool:
        trials = list_trials("resumed", settings)
        return len(trials) >= 2 and trials[1]["TrainingJobStatus"] == "InProgress"

    wait_for(running_second_trial)
    driver = describe_tuning_job("resumed", settings)["Driver"]
    os.kill(driver["Pid"], signal.SIGKILL)
    wait_for(lambda: not describe_tuning_job("resumed", settings)["Driver"]["Alive"], 10)
    before = {t["TrialNumber"]: t["TrainingJobName"] for t in list_trials("resumed", settings)}

    assert resume_tuning_job("resumed", settings, detach=False) == "Completed"
    trials = list_trials("resumed", settings)
    assert [t["TrialNumber"] for t in trials] == [1, 2, 3]
    # The trial in flight when the driver died was adopted, not started again.
    assert {n: before[n] for n in before} == {
        t["TrialNumber"]: t["TrainingJobName"] for t in trials if t["TrialNumber"] in before
    }
    assert len(TrainingJobService(settings).list_jobs(tuning_job_name="resumed")) == 3
    assert describe_tuning_job("resumed", settings)["TrainingJobStatusCounters"]["Completed"] == 3


def test_two_worker_processes_share_one_study(settings: Settings) -> None:
    create_tuning_job(
        script_request("shared", jobs=3, parallel=2, epochs=2, epoch_s=0.2, Strategy="Random"),
        settings,
        start=False,
    )
    command = [sys.executable, "-m", "bcd.tuning", "drive", "shared"]
    env = driver_env(settings)
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
        subprocess.Popen(
            [*command, "--worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ),
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=240)
        assert worker.returncode == 0, errors.decode()
    description = describe_tuning_job("shared", settings)
    assert description["HyperParameterTuningJobStatus"] == "Completed"
    assert description["TrainingJobStatusCounters"]["Completed"] == 3
    from bcd.tuning import _store

    rows = _store.trials("shared", settings)
    assert sorted(row.slot for row in rows) == [1, 2, 3]
    assert len({row.optuna_number for row in rows}) == 3
    # Never more than MaxParallelTrainingJobs trials at once, across both workers.
    events = sorted([(row.started_at, 1) for row in rows] + [(row.ended_at, -1) for row in rows])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak <= 2
