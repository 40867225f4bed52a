"""Check a tuning request against its algorithm before anything runs.

Every tuned hyperparameter must be one the algorithm has, each range's
bounds (or each categorical value) must be values it accepts, and the
objective metric must be one a trial can emit: a metric of the built-in
algorithm or a ``MetricDefinitions`` entry (script mode scrapes by regex).
"""

from __future__ import annotations

from typing import Any

from bcd.errors import BcdError, InvalidInputError
from bcd.tuning._config import CategoricalRange, ParameterRange, TuningJobConfig

SCRIPT_ALGORITHM = "script"
# Script mode: where the entry point is named (SageMaker's reserved hyperparameters).
_SCRIPT_RESERVED = ("sagemaker_program", "sagemaker_submit_directory")
_OBJECTIVE_PATH = "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective.MetricName"


def algorithm_key(name: str) -> str:
    """The algorithm named by ``AlgorithmName`` or a SageMaker image URI (``…/name:tag``)."""
    return name.strip().rsplit("/", 1)[-1].split(":", 1)[0]


def validate_against_algorithm(config: TuningJobConfig) -> None:
    """Check ranges, static hyperparameters and the objective against the algorithm.

    Raises:
        InvalidInputError: With the offending key's path: an unknown algorithm,
            a hyperparameter it does not have, a value it refuses, or an
            objective metric no trial would emit.
    """
    algorithm_path = "TrainingJobDefinition.AlgorithmSpecification.AlgorithmName"
    name = algorithm_key(config.algorithm_name or "")
    user_metrics = [item["Name"] for item in config.metric_definitions]
    if name == SCRIPT_ALGORITHM:
        for reserved in _SCRIPT_RESERVED[:1]:
            if reserved not in config.static_hyperparameters:
                raise InvalidInputError(
                    f"TrainingJobDefinition.StaticHyperParameters.{reserved}: missing; script "
                    "mode needs the entry point (e.g. train.py) and sagemaker_submit_directory"
                )
        for parameter in config.ranges:
            if parameter.name in _SCRIPT_RESERVED:
                raise InvalidInputError(
                    f"{config.range_paths[parameter.name]}.Name: {parameter.name!r} names the "
                    "script and cannot be tuned"
                )
        _check_objective(config.objective_metric, user_metrics, "MetricDefinitions")
        return
    algorithm = _builtin(name, algorithm_path)
    own_metrics = [item["Name"] for item in getattr(algorithm, "metric_definitions", [])]
    static = config.static_hyperparameters
    try:
        algorithm.validate_hyperparameters(dict(static))
    except InvalidInputError as error:
        raise InvalidInputError(
            f"TrainingJobDefinition.StaticHyperParameters: {error.message}"
        ) from None
    for parameter in config.ranges:
        path = config.range_paths[parameter.name]
        for value in _probe_values(parameter):
            try:
                algorithm.validate_hyperparameters({**static, parameter.name: str(value)})
            except InvalidInputError as error:
                raise InvalidInputError(f"{path}: {error.message}") from None
    _check_objective(config.objective_metric, own_metrics + user_metrics, f"algorithm {name!r}")


def _builtin(name: str, path: str) -> Any:
    try:
        from bcd.algorithms import get_algorithm
    except ImportError:
        raise InvalidInputError(
            f"{path}: built-in algorithms are not installed; use AlgorithmName: script"
        ) from None
    try:
        return get_algorithm(name)
    except BcdError as error:
        raise InvalidInputError(f"{path}: {error.message}") from None


def _probe_values(parameter: ParameterRange) -> list[Any]:
    if isinstance(parameter, CategoricalRange):
        return list(parameter.values)
    return [parameter.min_value, parameter.max_value]


def _check_objective(metric: str, known: list[str], source: str) -> None:
    if metric not in known:
        listed = ", ".join(sorted(set(known))) or "none"
        raise InvalidInputError(
            f"{_OBJECTIVE_PATH}: {metric!r} is not a metric any trial emits; {source} defines: "
            f"{listed}. Add a {{Name, Regex}} to "
            "TrainingJobDefinition.AlgorithmSpecification.MetricDefinitions to scrape it"
        )
