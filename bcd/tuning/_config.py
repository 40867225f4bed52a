"""The tuning-job request: parse and validate, with errors pointing at the offending key.

The request mirrors SageMaker's ``CreateHyperParameterTuningJob``: a
``HyperParameterTuningJobConfig`` (strategy, objective, limits, ranges, early
stopping, seed), a ``TrainingJobDefinition`` (what each trial trains), an
optional ``WarmStartConfig`` and ``Tags``. :func:`parse_request` turns that
dict (from YAML, JSON or the client) into a :class:`TuningJobConfig`; every
error names the key, e.g.
``HyperParameterTuningJobConfig.ParameterRanges.ContinuousParameterRanges[0].MinValue``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bcd.errors import InvalidInputError
from bcd.names import validate_name

STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
SCALING_TYPES = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
OBJECTIVE_TYPES = ("Maximize", "Minimize")
EARLY_STOPPING_TYPES = ("Off", "Auto")
WARM_START_TYPES = ("IdenticalDataAndAlgorithm", "TransferLearning")
TUNING_TAG = "bcd:tuning-job"
MAX_GRID_POINTS = 10_000
MAX_PARENT_JOBS = 5

_TOP_KEYS = (
    "HyperParameterTuningJobName",
    "HyperParameterTuningJobConfig",
    "TrainingJobDefinition",
    "WarmStartConfig",
    "Tags",
)
_CONFIG_KEYS = (
    "Strategy",
    "StrategyConfig",
    "HyperParameterTuningJobObjective",
    "ResourceLimits",
    "ParameterRanges",
    "TrainingJobEarlyStoppingType",
    "RandomSeed",
)
_DEFINITION_KEYS = (
    "AlgorithmSpecification",
    "StaticHyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "CheckpointConfig",
    "Environment",
    "EnableNetworkIsolation",
    "RoleArn",
)
_RANGE_KINDS = (
    "IntegerParameterRanges",
    "ContinuousParameterRanges",
    "CategoricalParameterRanges",
)

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ContinuousRange:
    """A float hyperparameter in ``[min_value, max_value]``.

    ``scaling`` is resolved (never ``Auto``): ``Linear``, ``Logarithmic`` or
    ``ReverseLogarithmic``.
    """

    name: str
    min_value: float
    max_value: float
    scaling: str


@dataclass(frozen=True)
class IntegerRange:
    """An integer hyperparameter in ``[min_value, max_value]`` (both included)."""

    name: str
    min_value: int
    max_value: int
    scaling: str


@dataclass(frozen=True)
class CategoricalRange:
    """A hyperparameter taking one of ``values``."""

    name: str
    values: tuple[Scalar, ...]


ParameterRange = ContinuousRange | IntegerRange | CategoricalRange


@dataclass(frozen=True)
class TuningJobConfig:
    """A validated tuning-job request.

    Attributes:
        name: The tuning job name (≤ 32 characters).
        strategy: ``Bayesian``, ``Random``, ``Grid`` or ``Hyperband``.
        objective_metric: The metric each trial is scored on.
        objective_type: ``Maximize`` or ``Minimize``.
        max_jobs: How many trials to run in all.
        max_parallel: How many trials may run at once.
        max_runtime_s: Wall-time limit of the whole tuning job, if any.
        early_stopping: ``Off`` or ``Auto`` (median-rule pruning on per-epoch metrics).
        random_seed: Seed of the sampler, for reproducible suggestions.
        ranges: The tuned hyperparameters.
        range_paths: For each range name, its key path in the request (for errors).
        hyperband_min_resource: Hyperband's smallest budget (epochs).
        hyperband_max_resource: Hyperband's largest budget (epochs), or None for "auto".
        definition: The ``TrainingJobDefinition`` every trial starts from.
        parents: Names of warm-start parent tuning jobs.
        warm_start_type: ``IdenticalDataAndAlgorithm`` or ``TransferLearning`` when warm.
        tags: Extra tags put on the tuning job's training jobs.
        request: The normalised request, as stored and described.
    """

    name: str
    strategy: str
    objective_metric: str
    objective_type: str
    max_jobs: int
    max_parallel: int
    max_runtime_s: float | None
    early_stopping: str
    random_seed: int | None
    ranges: tuple[ParameterRange, ...]
    range_paths: Mapping[str, str]
    hyperband_min_resource: int
    hyperband_max_resource: int | None
    definition: Mapping[str, Any]
    parents: tuple[str, ...]
    warm_start_type: str | None
    tags: tuple[Mapping[str, str], ...]
    request: Mapping[str, Any] = field(repr=False)

    @property
    def algorithm_name(self) -> str | None:
        """The algorithm each trial runs (``AlgorithmName`` or ``TrainingImage``)."""
        return algorithm_name(self.definition)

    @property
    def static_hyperparameters(self) -> dict[str, str]:
        """The fixed hyperparameters of every trial."""
        return dict(self.definition.get("StaticHyperParameters") or {})

    @property
    def metric_definitions(self) -> list[dict[str, str]]:
        """The ``{Name, Regex}`` pairs of the training-job definition."""
        spec = self.definition.get("AlgorithmSpecification") or {}
        return list(spec.get("MetricDefinitions") or [])

    @property
    def maximize(self) -> bool:
        """True when a larger objective value is better."""
        return self.objective_type == "Maximize"


def algorithm_name(definition: Mapping[str, Any]) -> str | None:
    """The algorithm named by a training-job definition's ``AlgorithmSpecification``."""
    spec = definition.get("AlgorithmSpecification") or {}
    name = spec.get("AlgorithmName") or spec.get("TrainingImage")
    return str(name) if name else None


def grid_size(ranges: tuple[ParameterRange, ...]) -> int:
    """How many points the grid of ``ranges`` holds (continuous ranges have none)."""
    size = 1
    for parameter in ranges:
        if isinstance(parameter, CategoricalRange):
            size *= len(parameter.values)
        elif isinstance(parameter, IntegerRange):
            size *= parameter.max_value - parameter.min_value + 1
        else:
            return 0
    return size


def parse_request(request: Mapping[str, Any], name: str | None = None) -> TuningJobConfig:
    """Validate a tuning-job request and return its parsed form.

    Args:
        request: A mapping with SageMaker's ``CreateHyperParameterTuningJob`` keys.
        name: The tuning job name, when not given inside ``request``.

    Returns:
        The validated :class:`TuningJobConfig`.

    Raises:
        InvalidInputError: On any malformed, missing or inconsistent key; the
            message starts with the key's path.
    """
    top = _mapping(request, "(request)")
    _known_keys(top, _TOP_KEYS, "")
    name = name or top.get("HyperParameterTuningJobName")
    if name is None:
        raise InvalidInputError(
            "HyperParameterTuningJobName: missing; give the tuning job a name (≤ 32 characters)"
        )
    try:
        validate_name(name, "tuning job name", max_length=32)
    except InvalidInputError as error:
        raise InvalidInputError(f"HyperParameterTuningJobName: {error.message}") from None

    config = _mapping(
        _required(top, "HyperParameterTuningJobConfig", ""), "HyperParameterTuningJobConfig"
    )
    _known_keys(config, _CONFIG_KEYS, "HyperParameterTuningJobConfig")
    path = "HyperParameterTuningJobConfig"
    strategy = _choice(config.get("Strategy", "Bayesian"), STRATEGIES, f"{path}.Strategy")
    objective_metric, objective_type = _objective(config, path)
    early_stopping = _choice(
        config.get("TrainingJobEarlyStoppingType", "Off"),
        EARLY_STOPPING_TYPES,
        f"{path}.TrainingJobEarlyStoppingType",
    )
    if strategy == "Hyperband" and early_stopping != "Off":
        raise InvalidInputError(
            f"{path}.TrainingJobEarlyStoppingType: Hyperband stops trials early by itself; "
            "set it to Off or leave it out"
        )
    random_seed = None
    if config.get("RandomSeed") is not None:
        random_seed = _integer(config["RandomSeed"], f"{path}.RandomSeed", minimum=0)

    definition = _definition(_required(top, "TrainingJobDefinition", ""))
    static = definition.get("StaticHyperParameters") or {}
    ranges, range_paths = _ranges(_required(config, "ParameterRanges", path), static, strategy)
    max_jobs, max_parallel, max_runtime = _limits(config, path, strategy, ranges)
    min_resource, max_resource = _hyperband(config, path, strategy)
    parents, warm_start_type = _warm_start(top.get("WarmStartConfig"), name)
    tags = _tags(top.get("Tags"))

    normalised = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            **{key: value for key, value in config.items()},
            "Strategy": strategy,
            "TrainingJobEarlyStoppingType": early_stopping,
            "ResourceLimits": {
                **(config.get("ResourceLimits") or {}),
                "MaxNumberOfTrainingJobs": max_jobs,
                "MaxParallelTrainingJobs": max_parallel,
            },
        },
        "TrainingJobDefinition": definition,
    }
    if top.get("WarmStartConfig") is not None:
        normalised["WarmStartConfig"] = dict(top["WarmStartConfig"])
    if tags:
        normalised["Tags"] = [dict(tag) for tag in tags]
    return TuningJobConfig(
        name=name,
        strategy=strategy,
        objective_metric=objective_metric,
        objective_type=objective_type,
        max_jobs=max_jobs,
        max_parallel=max_parallel,
        max_runtime_s=max_runtime,
        early_stopping=early_stopping,
        random_seed=random_seed,
        ranges=ranges,
        range_paths=range_paths,
        hyperband_min_resource=min_resource,
        hyperband_max_resource=max_resource,
        definition=definition,
        parents=parents,
        warm_start_type=warm_start_type,
        tags=tags,
        request=normalised,
    )


def _objective(config: Mapping[str, Any], path: str) -> tuple[str, str]:
    objective_path = f"{path}.HyperParameterTuningJobObjective"
    objective = _mapping(
        _required(config, "HyperParameterTuningJobObjective", path), objective_path
    )
    _known_keys(objective, ("Type", "MetricName"), objective_path)
    metric = _required(objective, "MetricName", objective_path)
    if not isinstance(metric, str) or not metric.strip():
        raise InvalidInputError(
            f"{objective_path}.MetricName: must be a non-empty metric name, "
            "e.g. validation:accuracy"
        )
    kind = _choice(
        _required(objective, "Type", objective_path), OBJECTIVE_TYPES, f"{objective_path}.Type"
    )
    return metric.strip(), kind


def _limits(
    config: Mapping[str, Any], path: str, strategy: str, ranges: tuple[ParameterRange, ...]
) -> tuple[int, int, float | None]:
    limits_path = f"{path}.ResourceLimits"
    limits = _mapping(config.get("ResourceLimits") or {}, limits_path)
    _known_keys(
        limits,
        ("MaxNumberOfTrainingJobs", "MaxParallelTrainingJobs", "MaxRuntimeInSeconds"),
        limits_path,
    )
    points = grid_size(ranges) if strategy == "Grid" else 0
    if "MaxNumberOfTrainingJobs" in limits:
        max_jobs = _integer(
            limits["MaxNumberOfTrainingJobs"], f"{limits_path}.MaxNumberOfTrainingJobs", minimum=1
        )
        if strategy == "Grid" and max_jobs > points:
            raise InvalidInputError(
                f"{limits_path}.MaxNumberOfTrainingJobs: is {max_jobs} but the grid has only "
                f"{points} points; lower it or leave it out to run the whole grid"
            )
    elif strategy == "Grid":
        max_jobs = points
    else:
        raise InvalidInputError(
            f"{limits_path}.MaxNumberOfTrainingJobs: missing; say how many trials to run in all"
        )
    max_parallel = _integer(
        limits.get("MaxParallelTrainingJobs", 1),
        f"{limits_path}.MaxParallelTrainingJobs",
        minimum=1,
    )
    max_runtime = None
    if limits.get("MaxRuntimeInSeconds") is not None:
        max_runtime = float(
            _integer(limits["MaxRuntimeInSeconds"], f"{limits_path}.MaxRuntimeInSeconds", minimum=1)
        )
    return max_jobs, max_parallel, max_runtime


def _hyperband(config: Mapping[str, Any], path: str, strategy: str) -> tuple[int, int | None]:
    strategy_config = config.get("StrategyConfig")
    if strategy_config is None:
        return 1, None
    config_path = f"{path}.StrategyConfig"
    if strategy != "Hyperband":
        raise InvalidInputError(
            f"{config_path}: only the Hyperband strategy takes a StrategyConfig"
        )
    strategy_config = _mapping(strategy_config, config_path)
    _known_keys(strategy_config, ("HyperbandStrategyConfig",), config_path)
    hyperband_path = f"{config_path}.HyperbandStrategyConfig"
    hyperband = _mapping(strategy_config.get("HyperbandStrategyConfig") or {}, hyperband_path)
    _known_keys(hyperband, ("MinResource", "MaxResource"), hyperband_path)
    min_resource = _integer(
        hyperband.get("MinResource", 1), f"{hyperband_path}.MinResource", minimum=1
    )
    max_resource = None
    if hyperband.get("MaxResource") is not None:
        max_resource = _integer(
            hyperband["MaxResource"], f"{hyperband_path}.MaxResource", minimum=1
        )
        if max_resource <= min_resource:
            raise InvalidInputError(
                f"{hyperband_path}.MaxResource: {max_resource} must be greater than "
                f"MinResource ({min_resource})"
            )
    return min_resource, max_resource


def _definition(value: Any) -> dict[str, Any]:
    path = "TrainingJobDefinition"
    definition = dict(_mapping(value, path))
    _known_keys(definition, _DEFINITION_KEYS, path)
    spec_path = f"{path}.AlgorithmSpecification"
    spec = _mapping(_required(definition, "AlgorithmSpecification", path), spec_path)
    if not (spec.get("AlgorithmName") or spec.get("TrainingImage")):
        raise InvalidInputError(
            f"{spec_path}.AlgorithmName: missing; name the algorithm each trial trains "
            "(image-classification, cnn or script)"
        )
    metric_definitions = spec.get("MetricDefinitions") or []
    if not isinstance(metric_definitions, list):
        raise InvalidInputError(f"{spec_path}.MetricDefinitions: must be a list of {{Name, Regex}}")
    for index, metric in enumerate(metric_definitions):
        metric_path = f"{spec_path}.MetricDefinitions[{index}]"
        metric = _mapping(metric, metric_path)
        for key in ("Name", "Regex"):
            if not isinstance(metric.get(key), str) or not metric[key]:
                raise InvalidInputError(f"{metric_path}.{key}: must be a non-empty string")
    static_path = f"{path}.StaticHyperParameters"
    static = _mapping(definition.get("StaticHyperParameters") or {}, static_path)
    normalised_static: dict[str, str] = {}
    for key, item in static.items():
        if isinstance(item, Mapping | list):
            raise InvalidInputError(
                f"{static_path}.{key}: must be a single value, not {type(item).__name__}"
            )
        normalised_static[str(key)] = format_value(item)
    definition["AlgorithmSpecification"] = dict(spec)
    definition["StaticHyperParameters"] = normalised_static
    return definition


def _ranges(
    value: Any, static: Mapping[str, Any], strategy: str
) -> tuple[tuple[ParameterRange, ...], dict[str, str]]:
    path = "HyperParameterTuningJobConfig.ParameterRanges"
    ranges_mapping = _mapping(value, path)
    _known_keys(ranges_mapping, _RANGE_KINDS, path)
    ranges: list[ParameterRange] = []
    paths: dict[str, str] = {}
    for kind in _RANGE_KINDS:
        entries = ranges_mapping.get(kind) or []
        if not isinstance(entries, list):
            raise InvalidInputError(f"{path}.{kind}: must be a list of ranges")
        for index, entry in enumerate(entries):
            entry_path = f"{path}.{kind}[{index}]"
            parsed = _range(kind, _mapping(entry, entry_path), entry_path, strategy)
            if parsed.name in paths:
                raise InvalidInputError(
                    f"{entry_path}.Name: {parsed.name!r} is already tuned by {paths[parsed.name]}"
                )
            if parsed.name in static:
                raise InvalidInputError(
                    f"{entry_path}.Name: {parsed.name!r} is also in "
                    "TrainingJobDefinition.StaticHyperParameters; a hyperparameter is either "
                    "fixed or tuned, remove one of them"
                )
            ranges.append(parsed)
            paths[parsed.name] = entry_path
    if not ranges:
        raise InvalidInputError(
            f"{path}: no ranges; give at least one of {', '.join(_RANGE_KINDS)}"
        )
    if strategy == "Grid" and grid_size(tuple(ranges)) > MAX_GRID_POINTS:
        raise InvalidInputError(
            f"{path}: the grid has {grid_size(tuple(ranges))} points, more than the "
            f"{MAX_GRID_POINTS} allowed; narrow the integer ranges or use Bayesian"
        )
    return tuple(ranges), paths


def _range(kind: str, entry: Mapping[str, Any], path: str, strategy: str) -> ParameterRange:
    name = _required(entry, "Name", path)
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{path}.Name: must be a hyperparameter name")
    if kind == "CategoricalParameterRanges":
        _known_keys(entry, ("Name", "Values"), path)
        values = _required(entry, "Values", path)
        if not isinstance(values, list) or not values:
            raise InvalidInputError(f"{path}.Values: must be a non-empty list of values")
        for index, item in enumerate(values):
            if not isinstance(item, Scalar):
                raise InvalidInputError(f"{path}.Values[{index}]: must be a single value")
        if len({format_value(item) for item in values}) != len(values):
            raise InvalidInputError(f"{path}.Values: lists a value twice; give each value once")
        return CategoricalRange(name=name, values=tuple(values))
    _known_keys(entry, ("Name", "MinValue", "MaxValue", "ScalingType"), path)
    if kind == "ContinuousParameterRanges" and strategy == "Grid":
        raise InvalidInputError(
            f"{path}: the Grid strategy cannot search a continuous range; use "
            "CategoricalParameterRanges with the values to try, or another strategy"
        )
    scaling = _choice(entry.get("ScalingType", "Auto"), SCALING_TYPES, f"{path}.ScalingType")
    integer = kind == "IntegerParameterRanges"
    number = _integer if integer else _float
    low = number(_required(entry, "MinValue", path), f"{path}.MinValue")
    high = number(_required(entry, "MaxValue", path), f"{path}.MaxValue")
    if low > high:
        raise InvalidInputError(
            f"{path}.MinValue: {low} is greater than MaxValue {high}; the range is inverted"
        )
    if low == high:
        raise InvalidInputError(
            f"{path}.MaxValue: equals MinValue ({low}), an empty range; put a fixed value "
            "in TrainingJobDefinition.StaticHyperParameters instead"
        )
    scaling = _resolve_scaling(scaling, low, high, integer, path)
    if integer:
        return IntegerRange(name=name, min_value=int(low), max_value=int(high), scaling=scaling)
    return ContinuousRange(name=name, min_value=float(low), max_value=float(high), scaling=scaling)


def _resolve_scaling(scaling: str, low: float, high: float, integer: bool, path: str) -> str:
    if scaling == "Auto":
        # Ranges spanning two orders of magnitude or more are searched on a log scale.
        return "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
    if scaling == "Logarithmic" and low <= 0:
        raise InvalidInputError(
            f"{path}.MinValue: Logarithmic scaling needs MinValue > 0, got {low}"
        )
    if scaling == "ReverseLogarithmic":
        if integer:
            raise InvalidInputError(
                f"{path}.ScalingType: ReverseLogarithmic applies to continuous ranges only"
            )
        if low < 0 or high >= 1:
            raise InvalidInputError(
                f"{path}.MaxValue: ReverseLogarithmic scaling needs 0 <= MinValue < MaxValue < 1, "
                f"got [{low}, {high}]"
            )
    return scaling


def _warm_start(value: Any, name: str) -> tuple[tuple[str, ...], str | None]:
    if value is None:
        return (), None
    path = "WarmStartConfig"
    warm = _mapping(value, path)
    _known_keys(warm, ("ParentHyperParameterTuningJobs", "WarmStartType"), path)
    warm_type = _choice(
        warm.get("WarmStartType", "IdenticalDataAndAlgorithm"),
        WARM_START_TYPES,
        f"{path}.WarmStartType",
    )
    parents_value = _required(warm, "ParentHyperParameterTuningJobs", path)
    if not isinstance(parents_value, list) or not parents_value:
        raise InvalidInputError(
            f"{path}.ParentHyperParameterTuningJobs: must list 1 to {MAX_PARENT_JOBS} parent jobs"
        )
    if len(parents_value) > MAX_PARENT_JOBS:
        raise InvalidInputError(
            f"{path}.ParentHyperParameterTuningJobs: lists {len(parents_value)} parents; "
            f"the limit is {MAX_PARENT_JOBS}"
        )
    parents: list[str] = []
    for index, parent in enumerate(parents_value):
        parent_path = f"{path}.ParentHyperParameterTuningJobs[{index}]"
        if isinstance(parent, Mapping):
            parent = parent.get("HyperParameterTuningJobName")
        if not isinstance(parent, str) or not parent:
            raise InvalidInputError(f"{parent_path}.HyperParameterTuningJobName: missing")
        if parent == name:
            raise InvalidInputError(f"{parent_path}: a tuning job cannot warm-start from itself")
        parents.append(parent)
    return tuple(dict.fromkeys(parents)), warm_type


def _tags(value: Any) -> tuple[Mapping[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInputError("Tags: must be a list of {Key, Value}")
    tags = []
    for index, tag in enumerate(value):
        tag = _mapping(tag, f"Tags[{index}]")
        key, item = tag.get("Key"), tag.get("Value", "")
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"Tags[{index}].Key: must be a non-empty string")
        if key == TUNING_TAG:
            raise InvalidInputError(f"Tags[{index}].Key: {TUNING_TAG!r} is reserved for bcd")
        tags.append({"Key": key, "Value": str(item)})
    return tuple(tags)


def format_value(value: Any) -> str:
    """A hyperparameter value as the string a training job receives.

    Floats keep full precision (``repr``); booleans become ``true``/``false``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{path}: must be a mapping of keys to values, got {type(value).__name__}"
        )
    return value


def _required(mapping: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in mapping or mapping[key] is None:
        where = f"{path}.{key}" if path else key
        raise InvalidInputError(f"{where}: missing; this key is required")
    return mapping[key]


def _known_keys(mapping: Mapping[str, Any], known: tuple[str, ...], path: str) -> None:
    for key in mapping:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            raise InvalidInputError(f"{where}: unknown key; expected one of {', '.join(known)}")


def _choice(value: Any, choices: tuple[str, ...], path: str) -> str:
    if value not in choices:
        raise InvalidInputError(f"{path}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _float(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise InvalidInputError(f"{path}: must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{path}: must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"{path}: must be a finite number, got {value!r}")
    return number


def _integer(value: Any, path: str, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise InvalidInputError(f"{path}: must be an integer, got {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise InvalidInputError(f"{path}: must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise InvalidInputError(f"{path}: must be at least {minimum}, got {number}")
    return number
