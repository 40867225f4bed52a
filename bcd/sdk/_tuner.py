"""``HyperparameterTuner`` and the parameter range classes, like the SageMaker SDK's.

::

    tuner = HyperparameterTuner(
        estimator,
        objective_metric_name="validation:accuracy",
        hyperparameter_ranges={
            "optimizer": CategoricalParameter(["sgd", "adam"]),
            "learning_rate": ContinuousParameter(1e-4, 1e-1, scaling_type="Logarithmic"),
            "mini_batch_size": IntegerParameter(16, 128),
        },
        max_jobs=6,
        max_parallel_jobs=2,
        early_stopping_type="Auto",
    )
    tuner.fit({"train": "dataset://idc/train", "validation": "dataset://idc/validation"})
    tuner.best_training_job()
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bcd.config import Settings, get_settings
from bcd.errors import InvalidInputError, JobFailedError


class _Parameter:
    """Base of the range classes; ``as_range(name)`` gives the request entry."""

    kind = ""

    def as_range(self, name: str) -> dict[str, Any]:
        """The ``ParameterRanges`` entry for hyperparameter ``name``."""
        raise NotImplementedError


class ContinuousParameter(_Parameter):
    """A float range.

    ``scaling_type``: ``Auto``, ``Linear``, ``Logarithmic`` or ``ReverseLogarithmic``.
    """

    kind = "ContinuousParameterRanges"

    def __init__(self, min_value: float, max_value: float, scaling_type: str = "Auto") -> None:
        self.min_value, self.max_value, self.scaling_type = min_value, max_value, scaling_type

    def as_range(self, name: str) -> dict[str, Any]:
        """The ``ContinuousParameterRanges`` entry."""
        return {
            "Name": name,
            "MinValue": str(self.min_value),
            "MaxValue": str(self.max_value),
            "ScalingType": self.scaling_type,
        }


class IntegerParameter(ContinuousParameter):
    """An integer range (both ends included); ``scaling_type`` as for continuous ranges."""

    kind = "IntegerParameterRanges"


class CategoricalParameter(_Parameter):
    """A choice among ``values``."""

    kind = "CategoricalParameterRanges"

    def __init__(self, values: Sequence[Any] | Any) -> None:
        self.values = list(values) if isinstance(values, list | tuple) else [values]

    def as_range(self, name: str) -> dict[str, Any]:
        """The ``CategoricalParameterRanges`` entry."""
        return {"Name": name, "Values": [str(value) for value in self.values]}


class HyperparameterTuner:
    """Tunes an estimator's hyperparameters with a tuning job.

    Args:
        estimator: A :class:`bcd.sdk.Estimator` (its algorithm, fixed
            hyperparameters, resources and metric definitions define each trial).
        objective_metric_name: The metric to optimise (built-in, or one of
            ``metric_definitions``).
        hyperparameter_ranges: Hyperparameter name → range object.
        strategy: ``Bayesian``, ``Random``, ``Grid`` or ``Hyperband``.
        objective_type: ``Maximize`` or ``Minimize``.
        max_jobs: Trials in all (``None`` with ``Grid``: the whole grid).
        max_parallel_jobs: Trials at once.
        early_stopping_type: ``Off`` or ``Auto``.
        metric_definitions: Extra ``{Name, Regex}`` pairs (script mode).
        random_seed: Seed for reproducible suggestions.
        base_tuning_job_name: Prefix of generated tuning job names.
        warm_start_parents: Names of parent tuning jobs to learn from.
        settings: Where the metadata store is.
    """

    def __init__(
        self,
        estimator: Any,
        objective_metric_name: str,
        hyperparameter_ranges: Mapping[str, _Parameter],
        strategy: str = "Bayesian",
        objective_type: str = "Maximize",
        max_jobs: int | None = 1,
        max_parallel_jobs: int = 1,
        early_stopping_type: str = "Off",
        metric_definitions: list[dict[str, str]] | None = None,
        random_seed: int | None = None,
        base_tuning_job_name: str | None = None,
        warm_start_parents: Sequence[str] = (),
        settings: Settings | None = None,
    ) -> None:
        for name, parameter in hyperparameter_ranges.items():
            if not isinstance(parameter, _Parameter):
                raise InvalidInputError(
                    f"hyperparameter_ranges[{name!r}] must be a CategoricalParameter, "
                    f"IntegerParameter or ContinuousParameter, got {type(parameter).__name__}"
                )
        self.estimator = estimator
        self.objective_metric_name = objective_metric_name
        self.hyperparameter_ranges = dict(hyperparameter_ranges)
        self.strategy = strategy
        self.objective_type = objective_type
        self.max_jobs = max_jobs
        self.max_parallel_jobs = max_parallel_jobs
        self.early_stopping_type = early_stopping_type
        self.metric_definitions = list(metric_definitions or [])
        self.random_seed = random_seed
        self.base_tuning_job_name = base_tuning_job_name or "bcd-tuning"
        self.warm_start_parents = list(warm_start_parents)
        self.settings = settings or getattr(estimator, "settings", None) or get_settings()
        self.latest_tuning_job: str | None = None

    def request(self, inputs: Any, job_name: str) -> dict[str, Any]:
        """The ``create_hyper_parameter_tuning_job`` request :meth:`fit` sends."""
        ranges: dict[str, list[dict[str, Any]]] = {}
        for name, parameter in self.hyperparameter_ranges.items():
            ranges.setdefault(parameter.kind, []).append(parameter.as_range(name))
        limits: dict[str, Any] = {"MaxParallelTrainingJobs": self.max_parallel_jobs}
        if self.max_jobs is not None:
            limits["MaxNumberOfTrainingJobs"] = self.max_jobs
        config: dict[str, Any] = {
            "Strategy": self.strategy,
            "HyperParameterTuningJobObjective": {
                "Type": self.objective_type,
                "MetricName": self.objective_metric_name,
            },
            "ResourceLimits": limits,
            "ParameterRanges": ranges,
            "TrainingJobEarlyStoppingType": self.early_stopping_type,
        }
        if self.random_seed is not None:
            config["RandomSeed"] = self.random_seed
        definition = training_job_definition(self.estimator, inputs, self.metric_definitions)
        static = definition.get("StaticHyperParameters", {})
        for name in self.hyperparameter_ranges:
            static.pop(name, None)  # a tuned hyperparameter is not also fixed
        request: dict[str, Any] = {
            "HyperParameterTuningJobName": job_name,
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": definition,
        }
        if self.warm_start_parents:
            request["WarmStartConfig"] = {
                "ParentHyperParameterTuningJobs": [
                    {"HyperParameterTuningJobName": parent} for parent in self.warm_start_parents
                ],
                "WarmStartType": "IdenticalDataAndAlgorithm",
            }
        return request

    def fit(self, inputs: Any = None, job_name: str | None = None, wait: bool = True) -> None:
        """Start a tuning job; with ``wait`` block until it ends.

        Args:
            inputs: Channel name → data URI, or one URI (the ``train`` channel).
            job_name: The tuning job name (≤ 32 characters); default a
                timestamped name from ``base_tuning_job_name``.
            wait: Block until the tuning job ends.

        Raises:
            InvalidInputError: The request is invalid (the message names the key).
            JobFailedError: With ``wait``, the tuning job failed.
        """
        from bcd import tuning

        name = job_name or _timestamped(self.base_tuning_job_name)
        tuning.create_tuning_job(self.request(inputs, name), self.settings)
        self.latest_tuning_job = name
        if wait:
            self.wait()

    def wait(self, poll_s: float = 2.0, timeout_s: float | None = None) -> dict[str, Any]:
        """Block until the latest tuning job ends; return its description.

        Raises:
            JobFailedError: The tuning job failed.
            BcdTimeoutError: ``timeout_s`` passed first.
        """
        from bcd import tuning
        from bcd.errors import BcdTimeoutError

        name = self._require_job()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            description = tuning.describe_tuning_job(name, self.settings)
            status = description["HyperParameterTuningJobStatus"]
            if status in ("Completed", "Stopped"):
                return description
            if status == "Failed":
                raise JobFailedError(
                    f"tuning job {name!r} failed: {description.get('FailureReason')}"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise BcdTimeoutError(f"tuning job {name!r} is still {status} after {timeout_s} s")
            time.sleep(poll_s)

    def describe(self) -> dict[str, Any]:
        """The latest tuning job's description."""
        from bcd import tuning

        return tuning.describe_tuning_job(self._require_job(), self.settings)

    def stop_tuning_job(self) -> None:
        """Stop the latest tuning job and its running trials."""
        from bcd import tuning

        tuning.stop_tuning_job(self._require_job(), self.settings)

    def best_training_job(self) -> str:
        """The name of the best training job of the latest tuning job.

        Raises:
            NotFoundError: No trial has completed with an objective value yet.
        """
        from bcd import tuning

        return tuning.best_training_job(self._require_job(), self.settings)

    def analytics(self) -> TuningAnalytics:
        """A table of the latest tuning job's trials."""
        return TuningAnalytics(self._require_job(), self.settings)

    def _require_job(self) -> str:
        if self.latest_tuning_job is None:
            raise InvalidInputError("this tuner has not started a tuning job yet; call fit() first")
        return self.latest_tuning_job


class TuningAnalytics:
    """The trials of a tuning job as rows: tuned values, objective, status, times.

    Args:
        tuning_job_name: The tuning job.
        settings: Where the metadata store is.
    """

    def __init__(self, tuning_job_name: str, settings: Settings | None = None) -> None:
        self.name = tuning_job_name
        self.settings = settings or get_settings()

    def rows(self) -> list[dict[str, Any]]:
        """One dict per trial, in launch order (``FinalObjectiveValue`` None when unknown)."""
        from bcd import tuning

        rows = []
        for summary in tuning.list_trials(self.name, self.settings):
            objective = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
            start, end = summary.get("TrainingStartTime"), summary.get("TrainingEndTime")
            rows.append(
                {
                    "TrialNumber": summary["TrialNumber"],
                    "TrainingJobName": summary["TrainingJobName"],
                    "TrainingJobStatus": summary["TrainingJobStatus"],
                    "Pruned": summary["Pruned"],
                    **summary["TunedHyperParameters"],
                    "FinalObjectiveValue": objective.get("Value"),
                    "TrainingStartTime": start,
                    "TrainingEndTime": end,
                    "TrainingElapsedTimeSeconds": (end - start).total_seconds()
                    if start and end
                    else None,
                }
            )
        return rows

    def dataframe(self) -> Any:
        """The rows as a pandas DataFrame.

        Raises:
            DependencyMissingError: pandas is not installed.
        """
        from bcd.errors import require

        require("pandas", "dev")
        import pandas

        return pandas.DataFrame(self.rows())


def training_job_definition(
    estimator: Any, inputs: Any, metric_definitions: list[dict[str, str]]
) -> dict[str, Any]:
    """The ``TrainingJobDefinition`` of an estimator's trials.

    Uses ``estimator.training_job_definition(inputs)`` when the estimator
    provides it, else the SageMaker-SDK-like attributes (``algorithm`` or
    ``image_uri``, ``hyperparameters()``, ``instance_count``, ``instance_type``,
    ``max_run``, ``output_path``, ``metric_definitions``, ``entry_point``,
    ``source_dir``).
    """
    if callable(getattr(estimator, "training_job_definition", None)):
        definition = dict(estimator.training_job_definition(inputs))
    else:
        definition = _definition_from_attributes(estimator, inputs)
    spec = dict(definition.get("AlgorithmSpecification") or {})
    merged = {item["Name"]: item for item in spec.get("MetricDefinitions") or []}
    merged.update({item["Name"]: item for item in metric_definitions})
    if merged:
        spec["MetricDefinitions"] = list(merged.values())
    definition["AlgorithmSpecification"] = spec
    definition["StaticHyperParameters"] = dict(definition.get("StaticHyperParameters") or {})
    return definition


def _definition_from_attributes(estimator: Any, inputs: Any) -> dict[str, Any]:
    algorithm = (
        getattr(estimator, "algorithm", None)
        or getattr(estimator, "algorithm_name", None)
        or getattr(estimator, "image_uri", None)
    )
    if not algorithm:
        raise InvalidInputError(
            "the estimator names no algorithm (algorithm, algorithm_name or image_uri)"
        )
    hyperparameters = getattr(estimator, "hyperparameters", None)
    static = dict(hyperparameters() if callable(hyperparameters) else hyperparameters or {})
    entry_point = getattr(estimator, "entry_point", None)
    if entry_point:
        static["sagemaker_program"] = entry_point
        source_dir = getattr(estimator, "source_dir", None)
        if source_dir:
            static["sagemaker_submit_directory"] = str(source_dir)
    definition: dict[str, Any] = {
        "AlgorithmSpecification": {
            "AlgorithmName": str(algorithm),
            "TrainingInputMode": getattr(estimator, "input_mode", None) or "File",
            "MetricDefinitions": list(getattr(estimator, "metric_definitions", None) or []),
        },
        "StaticHyperParameters": {key: str(value) for key, value in static.items()},
        "ResourceConfig": {
            "InstanceCount": int(getattr(estimator, "instance_count", 1) or 1),
            "InstanceType": str(getattr(estimator, "instance_type", "local") or "local"),
        },
    }
    max_run = getattr(estimator, "max_run", None)
    if max_run:
        definition["StoppingCondition"] = {"MaxRuntimeInSeconds": int(max_run)}
    output_path = getattr(estimator, "output_path", None)
    if output_path:
        definition["OutputDataConfig"] = {"S3OutputPath": str(output_path)}
    channels = _channels(inputs)
    if channels:
        definition["InputDataConfig"] = channels
    return definition


def _channels(inputs: Any) -> list[dict[str, Any]]:
    if inputs is None:
        return []
    if isinstance(inputs, str):
        inputs = {"train": inputs}
    if not isinstance(inputs, Mapping):
        raise InvalidInputError("inputs must be a data URI or a mapping of channel name to URI")
    return [
        {"ChannelName": name, "DataSource": {"S3DataSource": {"S3Uri": str(uri)}}}
        for name, uri in inputs.items()
    ]


def _timestamped(base: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%y%m%d-%H%M%S")
    return f"{base[: 32 - len(stamp) - 1]}-{stamp}"
