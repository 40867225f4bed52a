"""The driver loop against an in-memory training engine: limits, pruning, failures, stop.

The fake engine advances every running job by one epoch per poll, so these
tests are fast and deterministic; tests/tuning/test_jobs.py runs real jobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
import pytest

from bcd.config import Settings
from bcd.errors import InvalidInputError
from bcd.tuning import (
    _store,
    best_training_job,
    create_tuning_job,
    describe_tuning_job,
    list_trials,
)
from bcd.tuning._backend import JobState, MetricValue
from bcd.tuning._config import TuningJobConfig
from bcd.tuning._driver import TuningDriver
from bcd.tuning._study import load_study


class FakeEngine:
    """Jobs whose per-epoch ``score`` follows the tuned learning rate; one epoch per poll."""

    def __init__(self, epochs: int = 4, fail_when: str | None = None, emits: str = "score") -> None:
        self.epochs = epochs
        self.fail_when = fail_when
        self.emits = emits
        self.jobs: dict[str, dict[str, Any]] = {}
        self.running_high_water = 0
        self.stopped: list[str] = []

    def create(
        self, job_name: str, config: TuningJobConfig, hyperparameters: Mapping[str, Any]
    ) -> None:
        if hyperparameters.get("optimizer") == "refused":
            raise InvalidInputError("optimizer 'refused' is not accepted")
        quality = 1.0 - (math.log10(float(hyperparameters["learning_rate"])) + 2.0) ** 2 / 10.0
        self.jobs[job_name] = {
            "quality": quality,
            "epoch": 0,
            "status": "InProgress",
            "hp": hyperparameters,
        }
        running = sum(job["status"] == "InProgress" for job in self.jobs.values())
        self.running_high_water = max(self.running_high_water, running)

    def state(self, job_name: str) -> JobState:
        job = self.jobs[job_name]
        if job["status"] == "InProgress":
            job["epoch"] += 1
            if job["epoch"] >= self.epochs:
                failing = self.fail_when and job["hp"].get("optimizer") == self.fail_when
                job["status"] = "Failed" if failing else "Completed"
        final = {self.emits: job["quality"] * (1 - 0.5 ** job["epoch"])} if job["epoch"] else {}
        reason = "AlgorithmError: exploded" if job["status"] == "Failed" else None
        return JobState(status=job["status"], failure_reason=reason, final_metrics=final)

    def series(self, job_name: str, metric_name: str) -> list[MetricValue]:
        job = self.jobs[job_name]
        if metric_name != self.emits:
            return []
        return [
            MetricValue(step=epoch, value=job["quality"] * (1 - 0.5**epoch))
            for epoch in range(1, job["epoch"] + 1)
        ]

    def exists(self, job_name: str) -> bool:
        return job_name in self.jobs

    def stop(self, job_name: str) -> None:
        self.stopped.append(job_name)
        if self.jobs[job_name]["status"] == "InProgress":
            self.jobs[job_name]["status"] = "Stopped"


def request(name: str, **config: Any) -> dict[str, Any]:
    tuning_config: dict[str, Any] = {
        "Strategy": "Random",
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": 1e-5, "MaxValue": 1.0}
            ],
            "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam"]}],
        },
        "RandomSeed": 3,
    }
    tuning_config.update(config)
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": tuning_config,
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "AlgorithmName": "script",
                "MetricDefinitions": [
                    {"Name": "score", "Regex": "score=([0-9.]+)"},
                    {"Name": "accuracy", "Regex": "accuracy=([0-9.]+)"},
                ],
            },
            "StaticHyperParameters": {"sagemaker_program": "train.py"},
        },
    }


def run(name: str, settings: Settings, engine: FakeEngine, **config: Any) -> str:
    create_tuning_job(request(name, **config), settings, start=False)
    return TuningDriver(name, settings, poll_interval_s=0.0, backend=engine).run()  # type: ignore[arg-type]


def test_runs_max_jobs_at_most_max_parallel_at_once_and_reports_the_best(
    settings: Settings,
) -> None:
    engine = FakeEngine()
    assert run("limits", settings, engine) == "Completed"
    assert len(engine.jobs) == 6
    assert engine.running_high_water == 2
    description = describe_tuning_job("limits", settings)
    assert description["TrainingJobStatusCounters"]["Completed"] == 6
    trials = list_trials("limits", settings)
    values = {
        t["TrainingJobName"]: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        for t in trials
    }
    best = best_training_job("limits", settings)
    assert values[best] == max(values.values())
    assert description["BestTrainingJob"]["TrainingJobName"] == best
    # The recorded objective is the job's final metric, and the study agrees.
    job = engine.jobs[best]
    assert values[best] == pytest.approx(job["quality"] * (1 - 0.5**4))
    study = load_study(TuningDriver("limits", settings, backend=engine).config, settings)  # type: ignore[arg-type]
    assert study.best_value == pytest.approx(values[best])
    assert sorted(t["TrialNumber"] for t in trials) == [1, 2, 3, 4, 5, 6]


def test_auto_early_stopping_prunes_poor_trials_from_their_epochs(settings: Settings) -> None:
    engine = FakeEngine(epochs=6)
    status = run(
        "prune",
        settings,
        engine,
        TrainingJobEarlyStoppingType="Auto",
        ResourceLimits={"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 1},
    )
    assert status == "Completed"
    counters = describe_tuning_job("prune", settings)["TrainingJobStatusCounters"]
    assert counters["Pruned"] >= 1
    assert counters["Completed"] + counters["Pruned"] == 8
    pruned = [t for t in list_trials("prune", settings) if t["Pruned"]]
    for trial in pruned:
        assert trial["TrainingJobName"] in engine.stopped
        assert trial["TrainingJobStatus"] == "Stopped"
    completed_values = [
        t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        for t in list_trials("prune", settings)
        if t["TrainingJobStatus"] == "Completed"
    ]
    assert describe_tuning_job("prune", settings)["BestTrainingJob"][
        "FinalHyperParameterTuningJobObjectiveMetric"
    ]["Value"] == max(completed_values)


def test_a_failing_trial_is_counted_and_the_job_goes_on(settings: Settings) -> None:
    engine = FakeEngine(fail_when="adam")
    assert run("failing", settings, engine, RandomSeed=5) == "Completed"
    description = describe_tuning_job("failing", settings)
    counters = description["TrainingJobStatusCounters"]
    assert counters["Failed"] >= 1 and counters["Completed"] >= 1
    assert counters["Failed"] + counters["Completed"] == 6
    failed = [t for t in list_trials("failing", settings) if t["TrainingJobStatus"] == "Failed"]
    assert all(t["FailureReason"] == "AlgorithmError: exploded" for t in failed)
    assert all(t["TunedHyperParameters"]["optimizer"] == "adam" for t in failed)
    # The failed trials printed objective values before failing; none is reported.
    assert all("FinalHyperParameterTuningJobObjectiveMetric" not in t for t in failed)


def test_an_objective_no_job_emits_fails_the_tuning_job_after_the_first_trial(
    settings: Settings,
) -> None:
    engine = FakeEngine(emits="accuracy")
    status = run(
        "no-metric",
        settings,
        engine,
        ResourceLimits={"MaxNumberOfTrainingJobs": 5, "MaxParallelTrainingJobs": 1},
    )
    assert status == "Failed"
    assert len(engine.jobs) == 1
    reason = describe_tuning_job("no-metric", settings)["FailureReason"]
    assert "'score' was not emitted" in reason and "accuracy" in reason


def test_when_every_first_trial_fails_the_tuning_job_fails_fast(settings: Settings) -> None:
    engine = FakeEngine(fail_when="sgd")
    status = run(
        "all-fail",
        settings,
        engine,
        ParameterRanges={
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": 1e-5, "MaxValue": 1.0}
            ],
            "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "refused"]}],
        },
        ResourceLimits={"MaxNumberOfTrainingJobs": 20, "MaxParallelTrainingJobs": 1},
    )
    assert status == "Failed"
    description = describe_tuning_job("all-fail", settings)
    assert description["TrainingJobStatusCounters"]["Failed"] == 3
    assert "the first 3 trials all failed" in description["FailureReason"]


def test_stop_stops_running_trials_and_ends_stopped(settings: Settings) -> None:
    engine = FakeEngine(epochs=1000)
    create_tuning_job(request("stopping"), settings, start=False)
    driver = TuningDriver("stopping", settings, poll_interval_s=0.0, backend=engine)  # type: ignore[arg-type]
    driver._launch()
    driver._launch()
    assert not driver._launch()  # MaxParallelTrainingJobs reached
    _store.set_status("stopping", "Stopping", settings, stop_requested=True)
    assert driver.run() == "Stopped"
    assert sorted(engine.stopped) == sorted(engine.jobs)
    counters = describe_tuning_job("stopping", settings)["TrainingJobStatusCounters"]
    assert counters["Stopped"] == 2 and counters["InProgress"] == 0


def test_warm_start_seeds_the_study_with_parent_trials(settings: Settings) -> None:
    engine = FakeEngine()
    run("parent", settings, engine, ResourceLimits={"MaxNumberOfTrainingJobs": 3})
    child = request("child", ResourceLimits={"MaxNumberOfTrainingJobs": 2})
    child["WarmStartConfig"] = {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "parent"}]
    }
    create_tuning_job(child, settings, start=False)
    driver = TuningDriver("child", settings, poll_interval_s=0.0, backend=engine)  # type: ignore[arg-type]
    seeded = driver.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(seeded) == 3 and all(t.user_attrs["bcd:parent"] == "parent" for t in seeded)
    assert driver.run() == "Completed"
    assert len(list_trials("child", settings)) == 2  # parents' trials are not re-run or counted


def test_warm_start_from_an_unknown_or_running_parent_is_refused(settings: Settings) -> None:
    from bcd.errors import NotFoundError

    child = request("orphan")
    child["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": ["nobody"]}
    with pytest.raises(NotFoundError, match=r"ParentHyperParameterTuningJobs\[0\]"):
        create_tuning_job(child, settings, start=False)
    create_tuning_job(request("busy"), settings, start=False)
    child["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": ["busy"]}
    with pytest.raises(InvalidInputError, match="a parent must have ended"):
        create_tuning_job(child, settings, start=False)


def test_a_name_is_taken_once(settings: Settings) -> None:
    from bcd.errors import ConflictError

    create_tuning_job(request("twice"), settings, start=False)
    with pytest.raises(ConflictError, match="already exists"):
        create_tuning_job(request("twice"), settings, start=False)


def test_objective_must_be_a_metric_trials_emit(settings: Settings) -> None:
    bad = request("unknown-metric")
    bad["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] = "auc"
    with pytest.raises(
        InvalidInputError,
        match=r"HyperParameterTuningJobObjective.MetricName: 'auc' is not a metric any trial emits",
    ):
        create_tuning_job(bad, settings, start=False)


def test_a_grid_that_is_fully_tried_completes(settings: Settings) -> None:
    engine = FakeEngine()
    grid = {
        "CategoricalParameterRanges": [
            {"Name": "optimizer", "Values": ["sgd", "adam"]},
            {"Name": "learning_rate", "Values": ["0.001", "0.01"]},
        ]
    }
    status = run(
        "grid-done",
        settings,
        engine,
        Strategy="Grid",
        ParameterRanges=grid,
        ResourceLimits={"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
    )
    assert status == "Completed"
    assert len(engine.jobs) == 4
    tried = {(job["hp"]["optimizer"], job["hp"]["learning_rate"]) for job in engine.jobs.values()}
    assert len(tried) == 4
    assert describe_tuning_job("grid-done", settings)["TrainingJobStatusCounters"]["Completed"] == 4
