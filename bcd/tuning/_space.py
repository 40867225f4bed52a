"""Map parameter ranges onto Optuna: distributions, suggestions, grids, samplers, pruners.

Scaling types map as SageMaker defines them: ``Linear`` samples uniformly,
``Logarithmic`` uniformly in log space, and ``ReverseLogarithmic`` (for ranges
inside ``[0, 1)``, e.g. a momentum) samples ``1 - value`` in log space, so values
near 1 are explored densely. Optuna stores the reverse-log parameter as
``1 - value``; :func:`hyperparameters_of` turns stored parameters back into
the values a training job receives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bcd.tuning._config import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    Scalar,
    TuningJobConfig,
    format_value,
)

if TYPE_CHECKING:
    import optuna


def distributions(
    ranges: tuple[ParameterRange, ...],
) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distribution of each range, keyed by hyperparameter name."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    result: dict[str, optuna.distributions.BaseDistribution] = {}
    for parameter in ranges:
        if isinstance(parameter, CategoricalRange):
            result[parameter.name] = CategoricalDistribution(list(parameter.values))
        elif isinstance(parameter, IntegerRange):
            result[parameter.name] = IntDistribution(
                parameter.min_value, parameter.max_value, log=parameter.scaling == "Logarithmic"
            )
        elif parameter.scaling == "ReverseLogarithmic":
            result[parameter.name] = FloatDistribution(
                1.0 - parameter.max_value, 1.0 - parameter.min_value, log=True
            )
        else:
            result[parameter.name] = FloatDistribution(
                parameter.min_value, parameter.max_value, log=parameter.scaling == "Logarithmic"
            )
    return result


def suggest(trial: optuna.trial.Trial, ranges: tuple[ParameterRange, ...]) -> dict[str, Scalar]:
    """Ask ``trial`` for one value per range.

    Args:
        trial: A running Optuna trial.
        ranges: The tuned hyperparameters.

    Returns:
        The hyperparameter values for the training job (reverse-log already undone).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    params: dict[str, Any] = {}
    for name, distribution in distributions(ranges).items():
        if isinstance(distribution, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            params[name] = trial.suggest_int(
                name, distribution.low, distribution.high, log=distribution.log
            )
        elif isinstance(distribution, FloatDistribution):
            params[name] = trial.suggest_float(
                name, distribution.low, distribution.high, log=distribution.log
            )
    return hyperparameters_of(params, ranges)


def hyperparameters_of(
    params: Mapping[str, Any], ranges: tuple[ParameterRange, ...]
) -> dict[str, Scalar]:
    """Turn Optuna's stored parameters into hyperparameter values."""
    values: dict[str, Scalar] = {}
    for parameter in ranges:
        if parameter.name not in params:
            continue
        value = params[parameter.name]
        if isinstance(parameter, ContinuousRange) and parameter.scaling == "ReverseLogarithmic":
            value = 1.0 - float(value)
        elif isinstance(parameter, IntegerRange):
            value = int(value)
        values[parameter.name] = value
    return values


def params_of(
    hyperparameters: Mapping[str, Any], ranges: tuple[ParameterRange, ...]
) -> dict[str, Any] | None:
    """Turn hyperparameter values (e.g. a parent job's) into Optuna parameters.

    Returns:
        The parameters, or None when a value falls outside the ranges (the
        trial cannot seed a study over these ranges).
    """
    params: dict[str, Any] = {}
    for parameter in ranges:
        if parameter.name not in hyperparameters:
            return None
        raw = hyperparameters[parameter.name]
        if isinstance(parameter, CategoricalRange):
            matches = [v for v in parameter.values if format_value(v) == format_value(raw)]
            if not matches:
                return None
            params[parameter.name] = matches[0]
            continue
        try:
            number = float(raw)
        except (TypeError, ValueError):
            return None
        if not parameter.min_value <= number <= parameter.max_value:
            return None
        if isinstance(parameter, IntegerRange):
            params[parameter.name] = int(number)
        elif parameter.scaling == "ReverseLogarithmic":
            params[parameter.name] = 1.0 - number
        else:
            params[parameter.name] = number
    return params


def grid_search_space(ranges: tuple[ParameterRange, ...]) -> dict[str, list[Any]]:
    """Every value of each range, for Optuna's ``GridSampler`` (no continuous ranges)."""
    space: dict[str, list[Any]] = {}
    for parameter in ranges:
        if isinstance(parameter, CategoricalRange):
            space[parameter.name] = list(parameter.values)
        elif isinstance(parameter, IntegerRange):
            space[parameter.name] = list(range(parameter.min_value, parameter.max_value + 1))
        else:
            raise ValueError(f"continuous range {parameter.name!r} has no grid")
    return space


def make_sampler(config: TuningJobConfig, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for the tuning job's strategy.

    ``Bayesian`` and ``Hyperband`` use TPE (constant liar, so parallel trials
    do not all sample the same point) with a third of the budget, at most 10
    trials, of random start-up trials; ``Random`` and ``Grid`` use Optuna's
    random and grid samplers. ``RandomSeed`` seeds all of them; a resumed or
    extra worker passes ``seed_offset`` so it does not replay the suggestions
    of the first run.
    """
    import optuna

    seed = None if config.random_seed is None else config.random_seed + seed_offset
    if config.strategy == "Random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.strategy == "Grid":
        return optuna.samplers.GridSampler(grid_search_space(config.ranges), seed=seed)
    startup = min(10, max(1, config.max_jobs // 3))
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=startup, constant_liar=True, multivariate=True
    )


def make_pruner(config: TuningJobConfig) -> optuna.pruners.BasePruner:
    """The Optuna pruner: Hyperband for ``Hyperband``, the median rule for ``Auto``.

    ``Auto`` early stopping stops a trial whose intermediate objective at an
    epoch is worse than the median of earlier trials at that epoch (as
    SageMaker's does), once two trials have finished and after the first epoch.
    """
    import optuna

    if config.strategy == "Hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=config.hyperband_min_resource,
            max_resource=config.hyperband_max_resource or "auto",
            reduction_factor=3,
        )
    if config.early_stopping == "Auto":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()
