"""Ranges onto Optuna: scaling, round trips, grids, samplers and pruners."""

from __future__ import annotations

import math

import optuna
import pytest

from bcd.tuning._config import CategoricalRange, ContinuousRange, IntegerRange, parse_request
from bcd.tuning._space import (
    distributions,
    grid_search_space,
    hyperparameters_of,
    make_pruner,
    make_sampler,
    params_of,
    suggest,
)
from tests.tuning.test_config import base_request

optuna.logging.set_verbosity(optuna.logging.WARNING)

RANGES = (
    ContinuousRange("learning_rate", 1e-4, 1e-1, "Logarithmic"),
    ContinuousRange("momentum", 0.5, 0.999, "ReverseLogarithmic"),
    ContinuousRange("dropout", 0.0, 0.5, "Linear"),
    IntegerRange("mini_batch_size", 8, 256, "Logarithmic"),
    CategoricalRange("optimizer", ("sgd", "adam")),
)


def _sample(n: int, seed: int = 0) -> list[dict[str, object]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(suggest(trial, RANGES))
        study.tell(trial, 0.0)
    return values


def test_suggestions_stay_inside_every_range_with_the_right_types() -> None:
    for values in _sample(200):
        assert 1e-4 <= values["learning_rate"] <= 1e-1
        assert 0.5 <= values["momentum"] <= 0.999
        assert 0.0 <= values["dropout"] <= 0.5
        assert isinstance(values["mini_batch_size"], int) and 8 <= values["mini_batch_size"] <= 256
        assert values["optimizer"] in ("sgd", "adam")


def test_log_scaling_spreads_samples_over_orders_of_magnitude() -> None:
    rates = [float(values["learning_rate"]) for values in _sample(400, seed=1)]
    below_1e3 = sum(rate < 1e-3 for rate in rates) / len(rates)
    # Uniform in log space: a third of the decades lie below 1e-3; linear would give ~1 %.
    assert 0.22 < below_1e3 < 0.45


def test_reverse_log_scaling_crowds_samples_near_the_top() -> None:
    momenta = [float(values["momentum"]) for values in _sample(400, seed=2)]
    near_one = sum(momentum > 0.95 for momentum in momenta) / len(momenta)
    # Linear sampling would put ~10 % above 0.95; reverse-log puts well over a third.
    assert near_one > 0.35


def test_params_round_trip_through_optuna_parameters() -> None:
    for values in _sample(20, seed=3):
        params = params_of(values, RANGES)
        assert params is not None
        back = hyperparameters_of(params, RANGES)
        for name, value in values.items():
            if isinstance(value, float):
                assert math.isclose(back[name], value, rel_tol=1e-12)
            else:
                assert back[name] == value
        for name, distribution in distributions(RANGES).items():
            assert distribution._contains(distribution.to_internal_repr(params[name]))


def test_params_outside_the_ranges_cannot_seed_a_study() -> None:
    values = _sample(1)[0]
    assert params_of({**values, "learning_rate": 0.5}, RANGES) is None
    assert params_of({**values, "optimizer": "rmsprop"}, RANGES) is None
    assert (
        params_of({key: value for key, value in values.items() if key != "dropout"}, RANGES) is None
    )
    assert params_of({**values, "mini_batch_size": "32"}, RANGES) is not None


def test_grid_space_enumerates_integers_and_categories() -> None:
    space = grid_search_space(
        (IntegerRange("layers", 1, 3, "Linear"), CategoricalRange("o", ("a", "b")))
    )
    assert space == {"layers": [1, 2, 3], "o": ["a", "b"]}
    with pytest.raises(ValueError):
        grid_search_space((ContinuousRange("lr", 0.1, 0.2, "Linear"),))


@pytest.mark.parametrize(
    ("strategy", "early_stopping", "sampler", "pruner"),
    [
        ("Bayesian", "Auto", optuna.samplers.TPESampler, optuna.pruners.MedianPruner),
        ("Bayesian", "Off", optuna.samplers.TPESampler, optuna.pruners.NopPruner),
        ("Random", "Off", optuna.samplers.RandomSampler, optuna.pruners.NopPruner),
        ("Hyperband", "Off", optuna.samplers.TPESampler, optuna.pruners.HyperbandPruner),
    ],
)
def test_strategy_picks_sampler_and_pruner(strategy, early_stopping, sampler, pruner) -> None:  # type: ignore[no-untyped-def]
    request = base_request()
    request["HyperParameterTuningJobConfig"].update(
        Strategy=strategy, TrainingJobEarlyStoppingType=early_stopping
    )
    config = parse_request(request)
    assert isinstance(make_sampler(config), sampler)
    assert isinstance(make_pruner(config), pruner)


def test_a_seeded_sampler_repeats_its_suggestions_and_an_offset_changes_them() -> None:
    request = base_request()
    request["HyperParameterTuningJobConfig"]["Strategy"] = "Random"
    config = parse_request(request)

    def run(offset: int) -> list[dict[str, object]]:
        study = optuna.create_study(sampler=make_sampler(config, offset))
        suggestions = []
        for _ in range(3):
            trial = study.ask()
            suggestions.append(suggest(trial, config.ranges))
            study.tell(trial, 1.0)
        return suggestions

    assert run(0) == run(0)
    assert run(0) != run(3)
