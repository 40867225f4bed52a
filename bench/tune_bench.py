"""Tuning overhead per trial, and the speed-up of parallel trials, in one run.

Runs the same small script-mode tuning job (tests/tuning/scripts/quick_train.py,
about a second of "training" per trial) twice in a fresh BCD_HOME: with
MaxParallelTrainingJobs=1 and =2. Prints:

- overhead per trial: the tuning job's wall time minus the time its training
  jobs took (each from creation to end, as the engine records them), per
  trial, with one trial at a time: what the tuner adds (asking Optuna,
  creating the job, noticing its end, telling Optuna). Target < 1 s.
- speed-up: wall time with 1 parallel trial / wall time with 2.

    .venv/bin/python bench/tune_bench.py [--trials 6] [--epochs 4] [--epoch-seconds 0.25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bcd.config import Settings
from bcd.jobs import TrainingJobService
from bcd.tuning import create_tuning_job, describe_tuning_job, drive, list_trials

SCRIPTS = Path(__file__).resolve().parents[1] / "tests" / "tuning" / "scripts"


def request(name: str, trials: int, parallel: int, epochs: int, epoch_s: float) -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": trials,
                "MaxParallelTrainingJobs": parallel,
            },
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "learning_rate", "MinValue": 1e-4, "MaxValue": 1.0}
                ]
            },
            "RandomSeed": 0,
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "AlgorithmName": "script",
                "MetricDefinitions": [{"Name": "score", "Regex": r"score=([0-9.eE+-]+)"}],
            },
            "StaticHyperParameters": {
                "sagemaker_program": "quick_train.py",
                "sagemaker_submit_directory": str(SCRIPTS),
                "epochs": epochs,
                "epoch_seconds": epoch_s,
            },
        },
    }


def run(
    settings: Settings, name: str, trials: int, parallel: int, epochs: int, epoch_s: float
) -> tuple[float, float]:
    """Run one tuning job in this process; return (wall seconds, summed training-job seconds)."""
    create_tuning_job(request(name, trials, parallel, epochs, epoch_s), settings, start=False)
    started = time.perf_counter()
    status = drive(name, settings)
    wall = time.perf_counter() - started
    if status != "Completed":
        raise SystemExit(
            f"{name} ended {status}: {describe_tuning_job(name, settings).get('FailureReason')}"
        )
    jobs = TrainingJobService(settings, recover_orphans=False)
    training = 0.0
    for trial in list_trials(name, settings):
        job = jobs.describe(trial["TrainingJobName"])
        training += (job["TrainingEndTime"] - job["CreationTime"]).total_seconds()
    return wall, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch-seconds", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bcd-tune-bench-") as home:
        settings = Settings(home=Path(home))
        serial_wall, serial_training = run(
            settings, "bench-serial", args.trials, 1, args.epochs, args.epoch_seconds
        )
        parallel_wall, _ = run(
            settings, "bench-parallel", args.trials, 2, args.epochs, args.epoch_seconds
        )
    overhead = (serial_wall - serial_training) / args.trials
    print(f"trials per run:                       {args.trials}")
    print(f"MaxParallelTrainingJobs=1 wall time:  {serial_wall:.2f} s")
    print(
        f"  training jobs (created -> ended):   {serial_training:.2f} s "
        f"({serial_training / args.trials:.2f} s per trial)"
    )
    print(f"  tuning overhead per trial:          {overhead:.3f} s (target < 1 s)")
    print(f"MaxParallelTrainingJobs=2 wall time:  {parallel_wall:.2f} s")
    print(f"speed-up of 2 parallel trials vs 1:   {serial_wall / parallel_wall:.2f}x")


if __name__ == "__main__":
    main()
