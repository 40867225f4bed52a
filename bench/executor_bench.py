"""The ray executor against the local one, and parallel tuning trials on Ray, in one run.

Starts one local Ray cluster in this process (``ray.init(num_cpus=CORES)``,
as the tests do; job supervisors join it by address), imports a small dataset
(real patients from ../shared/data, synthetic ones without it) into a fresh
BCD_HOME, then prints:

- start to first epoch: from a ``cnn`` job's ``CreationTime`` to its first
  ``train:loss`` point in the store (process starts, Ray connection and
  reservation, torch import, data loading, one epoch), median of the rounds,
  local and ray, and the ratio ray / local (target <= 1.5);
- training throughput: the trainer's ``train:throughput`` (images/s, median of
  the epochs after the first), median of the rounds, and the ratio ray / local
  (target >= 0.9);
- tuning: the wall time of a tuning job of ``--trials`` ``cnn`` trials on Ray
  with ``MaxParallelTrainingJobs=1`` and ``=2``, and the ratio parallel /
  serial (target <= 0.6); the same with trials of the tuning tests' script
  (tests/tuning/scripts/quick_train.py, about a second of sleeping "training")
  to show the executor's concurrency apart from competition for the cores;
  and the same on the local executor, for comparison.

Local and ray jobs alternate round by round, and each tuning round runs the
serial tuning jobs on every executor, then the parallel ones, so load from other
processes on a shared machine hits both alike; the load average before and
after is printed.

    .venv/bin/python bench/executor_bench.py [--patients 6] [--epochs 3] [--rounds 3]
        [--trials 4] [--trial-epochs 1] [--tuning-rounds 1] [--cores 2]
        [--tuning cnn,script] [--tuning-executors ray,local]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from train_bench import make_dataset

from bcd.config import Settings
from bcd.jobs import TERMINAL, TrainingJobService, get_metric_series

POLL_S = 1.0


def train_request(name: str, dataset: str, epochs: int) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"AlgorithmName": "cnn"},
        "HyperParameters": {"epochs": str(epochs), "seed": "1"},
        "InputDataConfig": [
            {"ChannelName": "train", "Uri": f"dataset://{dataset}/train"},
            {"ChannelName": "validation", "Uri": f"dataset://{dataset}/validation"},
        ],
    }


def wait(service: TrainingJobService, name: str) -> dict[str, Any]:
    while True:
        job = service.describe(name)
        if job["TrainingJobStatus"] in TERMINAL:
            if job["TrainingJobStatus"] != "Completed":
                raise SystemExit(f"{name} ended {job['TrainingJobStatus']}: {job}")
            return job
        time.sleep(POLL_S)


def one_job(settings: Settings, name: str, epochs: int) -> tuple[float, float]:
    """Run one cnn job; (seconds from creation to its first epoch, median images/s)."""
    service = TrainingJobService(settings, recover_orphans=False)
    service.create(train_request(name, "bench", epochs))
    job = wait(service, name)
    first = get_metric_series(name, "train:loss", settings)[0].timestamp
    created = job["CreationTime"]
    first = first if first.tzinfo else first.replace(tzinfo=created.tzinfo)
    rates = [point.value for point in get_metric_series(name, "train:throughput", settings)]
    rates = rates[1:] or rates
    return (first - created).total_seconds(), statistics.median(rates)


SCRIPTS = Path(__file__).resolve().parents[1] / "tests" / "tuning" / "scripts"


def trial_definition(kind: str, epochs: int) -> dict[str, Any]:
    """The trials' training job: a ``cnn`` on the bench data, or the sleeping tuning test script."""
    if kind == "script":
        return {
            "AlgorithmSpecification": {
                "AlgorithmName": "script",
                "MetricDefinitions": [{"Name": "validation:auc", "Regex": r"score=([0-9.eE+-]+)"}],
            },
            "StaticHyperParameters": {
                "sagemaker_program": "quick_train.py",
                "sagemaker_submit_directory": str(SCRIPTS),
                "epochs": str(epochs * 4),
                "epoch_seconds": "0.25",
            },
        }
    definition = train_request("unused", "bench", epochs)
    return {
        "AlgorithmSpecification": definition["AlgorithmSpecification"],
        "StaticHyperParameters": definition["HyperParameters"],
        "InputDataConfig": definition["InputDataConfig"],
    }


def tuning_request(name: str, kind: str, trials: int, parallel: int, epochs: int) -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize",
                "MetricName": "validation:auc",
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": trials,
                "MaxParallelTrainingJobs": parallel,
            },
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "learning_rate", "MinValue": 1e-4, "MaxValue": 1e-2}
                ]
            },
            "RandomSeed": 0,
        },
        "TrainingJobDefinition": trial_definition(kind, epochs),
    }


def tuning_run(
    settings: Settings, name: str, kind: str, trials: int, parallel: int, epochs: int
) -> tuple[float, int]:
    """Run one tuning job in this process; (wall seconds, most trials running at once)."""
    from bcd.tuning import _store, create_tuning_job, describe_tuning_job, drive

    request = tuning_request(name, kind, trials, parallel, epochs)
    create_tuning_job(request, settings, start=False)
    started = time.perf_counter()
    status = drive(name, settings, primary=True)
    wall = time.perf_counter() - started
    if status != "Completed":
        raise SystemExit(f"{name} ended {status}: {describe_tuning_job(name, settings)}")
    rows = _store.trials(name, settings)
    events = sorted([(row.started_at, 1) for row in rows] + [(row.ended_at, -1) for row in rows])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return wall, peak


def run_tuning(
    executors: dict[str, Settings], args: argparse.Namespace
) -> dict[tuple[str, str], list[tuple[float, float, int]]]:
    """(serial s, parallel s, peak) per round for each (executor, kind), interleaved."""
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for round_index in range(args.tuning_rounds):
        for kind in args.tuning.split(","):
            walls: dict[tuple[str, int], tuple[float, int]] = {}
            # serial on each executor, then parallel on each: load drifts hit all alike
            for parallel in (1, 2):
                for where in args.tuning_executors.split(","):
                    name = f"bench-{where}-{kind}-{parallel}-{round_index}"
                    walls[(where, parallel)] = tuning_run(
                        executors[where], name, kind, args.trials, parallel, args.trial_epochs
                    )
            for where in args.tuning_executors.split(","):
                (serial, _), (parallel_s, peak) = walls[(where, 1)], walls[(where, 2)]
                results.setdefault((where, kind), []).append((serial, parallel_s, peak))
    return results


def print_tuning(
    tuning: dict[tuple[str, str], list[tuple[float, float, int]]], args: argparse.Namespace
) -> None:
    for (where, kind), rows in tuning.items():
        what = f"{args.trial_epochs}-epoch cnn" if kind == "cnn" else "sleeping script (1 s)"
        ratios = [parallel / serial for serial, parallel, _ in rows]
        print(f"tuning on {where}, {args.trials} trials, each a {what}:")
        for serial, parallel, peak in rows:
            print(
                f"  MaxParallelTrainingJobs=1: {serial:6.2f} s, =2: {parallel:6.2f} s "
                f"(at most {peak} at once), parallel / serial {parallel / serial:.2f}"
            )
        print(f"  parallel / serial (median):  {statistics.median(ratios):.2f} (target <= 0.6)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="0 skips the single-job part")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--trial-epochs", type=int, default=1)
    parser.add_argument("--tuning-rounds", type=int, default=1)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--tuning", default="cnn,script", help="trial kinds to tune: cnn and/or script"
    )
    parser.add_argument(
        "--tuning-executors", default="ray,local", help="executors to tune on, for comparison"
    )
    args = parser.parse_args()

    import ray

    load_before = os.getloadavg()
    context = ray.init(
        address="local",  # a new cluster, even when `ray start` runs here
        num_cpus=args.cores,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        configure_logging=False,
    )
    address = context.address_info["gcs_address"]
    with tempfile.TemporaryDirectory(prefix="bcd-executor-bench-") as home:
        local = Settings(home=Path(home), executor="local")
        on_ray = Settings(home=Path(home), executor="ray", ray_address=address)
        source = make_dataset(local, args.patients)
        results: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
        for round_index in range(args.rounds):
            for settings in (local, on_ray):
                name = f"bench-{settings.executor}-{round_index}"
                results[settings.executor].append(one_job(settings, name, args.epochs))
        tuning = run_tuning({"ray": on_ray, "local": local}, args)
    ray.shutdown()
    load_after = os.getloadavg()

    print(f"data: {source}; {args.rounds} rounds of a {args.epochs}-epoch cnn job per executor")
    print(f"Ray cluster: local, {args.cores} CPUs (ray.init in this process)")
    print(
        f"machine: {os.cpu_count()} cores; load average (1 min) {load_before[0]:.1f} "
        f"before, {load_after[0]:.1f} after"
    )
    if args.rounds:
        start = {key: statistics.median(s for s, _ in rows) for key, rows in results.items()}
        rate = {key: statistics.median(r for _, r in rows) for key, rows in results.items()}
        for key in ("local", "ray"):
            runs = ", ".join(f"{s:.2f}" for s, _ in results[key])
            print(
                f"{key:>5}: start to first epoch {start[key]:6.2f} s (runs {runs}), "
                f"throughput {rate[key]:7.1f} images/s"
            )
        print(
            f"start to first epoch, ray / local:  {start['ray'] / start['local']:.2f} "
            "(target <= 1.5)"
        )
        print(
            f"training throughput, ray / local:   {rate['ray'] / rate['local']:.2f} (target >= 0.9)"
        )
    print_tuning(tuning, args)


if __name__ == "__main__":
    main()
