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
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

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


_TUNER_EXPLICIT = (
    "estimator",
    "objective_metric_name",
    "hyperparameter_ranges",
    "metric_definitions",
    "strategy",
    "objective_type",
    "max_jobs",
    "max_parallel_jobs",
    "early_stopping_type",
    "random_seed",
    "base_tuning_job_name",
    "warm_start_config",
    "warm_start_parents",
    "settings",
)


class HyperparameterTuner:
    """Tunes an estimator's hyperparameters with a tuning job.

    The arguments, and their order, are the SageMaker SDK v2's; the ones with
    no effect here (``max_runtime_in_seconds``, ``tags``, ``strategy_config``…)
    are kept in :attr:`sagemaker_arguments` and noted in the log.

    Args:
        estimator: A :class:`bcd.sdk.Estimator` (its algorithm, fixed
            hyperparameters, resources and metric definitions define each trial).
        objective_metric_name: The metric to optimise (built-in, or one of
            ``metric_definitions``).
        hyperparameter_ranges: Hyperparameter name → range object.
        metric_definitions: Extra ``{Name, Regex}`` pairs (script mode).
        strategy: ``Bayesian``, ``Random``, ``Grid`` or ``Hyperband``.
        objective_type: ``Maximize`` or ``Minimize``.
        max_jobs: Trials in all (``None`` with ``Grid``: the whole grid).
        max_parallel_jobs: Trials at once.
        early_stopping_type: ``Off`` or ``Auto``.
        random_seed: Seed for reproducible suggestions.
        base_tuning_job_name: Prefix of generated tuning job names.
        warm_start_config: A SageMaker ``WarmStartConfig`` (its ``parents``
            are learnt from, like ``warm_start_parents``).
        warm_start_parents: Names of parent tuning jobs to learn from.
        settings: Where the metadata store is.
        **sagemaker_arguments: Other SageMaker ``HyperparameterTuner`` arguments.

    Raises:
        InvalidInputError: A range that is not a parameter object, or an
            unknown keyword argument (the message lists the accepted ones).
    """

    def __init__(
        self,
        estimator: Any,
        objective_metric_name: str,
        hyperparameter_ranges: Mapping[str, _Parameter],
        metric_definitions: list[dict[str, str]] | None = None,
        strategy: str = "Bayesian",
        objective_type: str = "Maximize",
        max_jobs: int | None = 1,
        max_parallel_jobs: int = 1,
        *,
        early_stopping_type: str = "Off",
        random_seed: int | None = None,
        base_tuning_job_name: str | None = None,
        warm_start_config: Any = None,
        warm_start_parents: Sequence[str] = (),
        settings: Settings | None = None,
        **sagemaker_arguments: Any,
    ) -> None:
        from bcd.sdk._sagemaker import TUNER_IGNORED, check_arguments

        self.sagemaker_arguments = check_arguments(
            "HyperparameterTuner", sagemaker_arguments, TUNER_IGNORED, _TUNER_EXPLICIT
        )
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
        parents = list(getattr(warm_start_config, "parents", None) or ())
        self.warm_start_parents = [*warm_start_parents, *sorted(map(str, parents))]
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

    def fit(
        self,
        inputs: Any = None,
        job_name: str | None = None,
        include_cls_metadata: bool = False,
        estimator_kwargs: Mapping[str, Any] | None = None,
        wait: bool = True,
        logs: bool | str = True,
        stream: IO[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start a tuning job; with ``wait`` block until it ends, showing progress.

        Args:
            inputs: Channel name → data URI or :class:`~bcd.sdk.TrainingInput`,
                or one of them (the ``train`` channel).
            job_name: The tuning job name (≤ 32 characters); default a
                timestamped name from ``base_tuning_job_name``.
            include_cls_metadata: SageMaker's; accepted and ignored.
            estimator_kwargs: SageMaker's (multi-estimator tuning); accepted
                and ignored.
            wait: Block until the tuning job ends.
            logs: While waiting, print a line each time the trial counts or
                the best trial change (``False`` or ``"None"``: wait quietly).
            stream: Where progress goes; default ``sys.stdout`` (a notebook cell).
            **kwargs: What SageMaker passes on to the estimator's ``fit``
                (``experiment_config``); accepted and ignored.

        Raises:
            InvalidInputError: The request is invalid (the message names the key),
                or an unknown keyword argument.
            JobFailedError: With ``wait``, the tuning job failed.
        """
        from bcd import tuning
        from bcd.sdk._estimator import logs_wanted
        from bcd.sdk._sagemaker import check_arguments, note_ignored

        explicit = ("inputs", "job_name", "include_cls_metadata", "estimator_kwargs", "wait")
        check_arguments(
            "HyperparameterTuner.fit",
            kwargs,
            frozenset({"experiment_config"}),
            (*explicit, "logs", "stream"),
        )
        note_ignored(
            "HyperparameterTuner.fit",
            include_cls_metadata=include_cls_metadata or None,
            estimator_kwargs=estimator_kwargs,
        )
        name = job_name or _timestamped(self.base_tuning_job_name)
        tuning.create_tuning_job(self.request(inputs, name), self.settings)
        self.latest_tuning_job = name
        if wait:
            self.wait(progress=(stream or sys.stdout) if logs_wanted(logs) else None)

    def wait(
        self,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        progress: IO[str] | None = None,
    ) -> dict[str, Any]:
        """Block until the latest tuning job ends; return its description.

        Args:
            poll_s: Seconds between looks at the tuning job.
            timeout_s: Give up after this long (``None``: wait for the end).
            progress: Where to print a line each time the trial counts or the
                best trial change, and one at the end (``None``: quiet).

        Raises:
            JobFailedError: The tuning job failed.
            BcdTimeoutError: ``timeout_s`` passed first.
        """
        from bcd import tuning
        from bcd.errors import BcdTimeoutError

        name = self._require_job()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        shown = ""
        while True:
            description = tuning.describe_tuning_job(name, self.settings)
            status = description["HyperParameterTuningJobStatus"]
            line = progress_line(description)
            if progress is not None and line != shown:
                progress.write(line + "\n")
                progress.flush()
                shown = line
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


def progress_line(description: Mapping[str, Any]) -> str:
    """One line on a tuning job: status, trial counts and the best trial so far."""
    counters = description.get("TrainingJobStatusCounters") or {}
    limits = (description.get("HyperParameterTuningJobConfig") or {}).get("ResourceLimits") or {}
    total = limits.get("MaxNumberOfTrainingJobs", "?")
    ended = sum(int(counters.get(key, 0)) for key in ("Completed", "Failed", "Stopped", "Pruned"))
    parts = [
        f"{description['HyperParameterTuningJobName']}: "
        f"{description['HyperParameterTuningJobStatus']}",
        f"trials {ended}/{total} ended ({counters.get('Completed', 0)} completed, "
        f"{counters.get('InProgress', 0)} running, {counters.get('Failed', 0)} failed, "
        f"{counters.get('Stopped', 0) + counters.get('Pruned', 0)} stopped)",
    ]
    best = description.get("BestTrainingJob") or {}
    objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    if objective:
        parts.append(
            f"best {objective['MetricName']}={objective['Value']:.4g} ({best['TrainingJobName']})"
        )
    return " · ".join(parts)


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
    from bcd.sdk._sagemaker import channel_entries

    channels = channel_entries(inputs)
    if channels:
        definition["InputDataConfig"] = channels
    return definition


def _timestamped(base: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%y%m%d-%H%M%S")
    return f"{base[: 32 - len(stamp) - 1]}-{stamp}"
