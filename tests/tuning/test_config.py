"""The tuning request schema: valid requests parse, each bad input names its key."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bcd.errors import InvalidInputError
from bcd.tuning import parse_request
from bcd.tuning._config import CategoricalRange, ContinuousRange, IntegerRange, grid_size


def base_request() -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": "idc-tune",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize",
                "MetricName": "validation:accuracy",
            },
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam"]}],
                "ContinuousParameterRanges": [
                    {
                        "Name": "learning_rate",
                        "MinValue": "0.0001",
                        "MaxValue": "0.1",
                        "ScalingType": "Logarithmic",
                    }
                ],
                "IntegerParameterRanges": [
                    {"Name": "mini_batch_size", "MinValue": 16, "MaxValue": 64}
                ],
            },
            "TrainingJobEarlyStoppingType": "Auto",
            "RandomSeed": 7,
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "AlgorithmName": "image-classification",
                "TrainingInputMode": "File",
            },
            "StaticHyperParameters": {"epochs": 3, "num_classes": "2"},
            "InputDataConfig": [{"ChannelName": "train", "Uri": "dataset://idc/train"}],
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of the base request with the key at dotted ``path`` set (None deletes)."""
    request = copy.deepcopy(base_request())
    node: Any = request
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return request


def test_a_valid_request_parses_into_typed_ranges() -> None:
    config = parse_request(base_request())
    assert config.name == "idc-tune"
    assert (config.max_jobs, config.max_parallel) == (6, 2)
    assert config.early_stopping == "Auto" and config.random_seed == 7
    by_name = {parameter.name: parameter for parameter in config.ranges}
    assert by_name["optimizer"] == CategoricalRange("optimizer", ("sgd", "adam"))
    assert by_name["learning_rate"] == ContinuousRange("learning_rate", 1e-4, 0.1, "Logarithmic")
    assert by_name["mini_batch_size"] == IntegerRange("mini_batch_size", 16, 64, "Linear")
    assert config.static_hyperparameters == {"epochs": "3", "num_classes": "2"}
    assert config.request["HyperParameterTuningJobConfig"]["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": 6,
        "MaxParallelTrainingJobs": 2,
    }


def test_auto_scaling_picks_log_for_ranges_spanning_orders_of_magnitude() -> None:
    request = with_change(
        "HyperParameterTuningJobConfig.ParameterRanges.ContinuousParameterRanges",
        [
            {"Name": "learning_rate", "MinValue": 1e-5, "MaxValue": 1e-1},
            {"Name": "momentum", "MinValue": 0.5, "MaxValue": 0.9},
        ],
    )
    scaling = {
        parameter.name: getattr(parameter, "scaling", None)
        for parameter in parse_request(request).ranges
    }
    assert scaling["learning_rate"] == "Logarithmic"
    assert scaling["momentum"] == "Linear"


R = "HyperParameterTuningJobConfig.ParameterRanges"
BAD_INPUTS = [
    pytest.param(
        f"{R}.ContinuousParameterRanges.0.MinValue",
        "0.5",
        f"{R}.ContinuousParameterRanges[0].MinValue",
        "inverted",
        id="inverted-continuous",
    ),
    pytest.param(
        f"{R}.IntegerParameterRanges.0.MaxValue",
        16,
        f"{R}.IntegerParameterRanges[0].MaxValue",
        "empty range",
        id="empty-integer",
    ),
    pytest.param(
        f"{R}.CategoricalParameterRanges.0.Values",
        [],
        f"{R}.CategoricalParameterRanges[0].Values",
        "non-empty",
        id="empty-categorical",
    ),
    pytest.param(
        f"{R}.CategoricalParameterRanges.0.Values",
        ["sgd", "sgd"],
        f"{R}.CategoricalParameterRanges[0].Values",
        "twice",
        id="duplicate-categorical",
    ),
    pytest.param(
        f"{R}.ContinuousParameterRanges.0.MinValue",
        "fast",
        f"{R}.ContinuousParameterRanges[0].MinValue",
        "must be a number",
        id="not-a-number",
    ),
    pytest.param(
        f"{R}.ContinuousParameterRanges.0.MinValue",
        0,
        f"{R}.ContinuousParameterRanges[0].MinValue",
        "Logarithmic scaling needs MinValue > 0",
        id="log-from-zero",
    ),
    pytest.param(
        f"{R}.IntegerParameterRanges.0.ScalingType",
        "ReverseLogarithmic",
        f"{R}.IntegerParameterRanges[0].ScalingType",
        "continuous ranges only",
        id="reverse-log-integer",
    ),
    pytest.param(
        f"{R}.ContinuousParameterRanges.0.ScalingType",
        "Quadratic",
        f"{R}.ContinuousParameterRanges[0].ScalingType",
        "not one of",
        id="unknown-scaling",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.ResourceLimits.MaxNumberOfTrainingJobs",
        0,
        "HyperParameterTuningJobConfig.ResourceLimits.MaxNumberOfTrainingJobs",
        "at least 1",
        id="zero-jobs",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.ResourceLimits.MaxParallelTrainingJobs",
        -2,
        "HyperParameterTuningJobConfig.ResourceLimits.MaxParallelTrainingJobs",
        "at least 1",
        id="negative-parallel",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.ResourceLimits.MaxNumberOfTrainingJobs",
        None,
        "HyperParameterTuningJobConfig.ResourceLimits.MaxNumberOfTrainingJobs",
        "missing",
        id="no-job-limit",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.Strategy",
        "Genetic",
        "HyperParameterTuningJobConfig.Strategy",
        "Bayesian, Random, Grid, Hyperband",
        id="unknown-strategy",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective.Type",
        "Maximise",
        "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective.Type",
        "Maximize, Minimize",
        id="objective-type",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.TrainingJobEarlyStoppingType",
        "Always",
        "HyperParameterTuningJobConfig.TrainingJobEarlyStoppingType",
        "Off, Auto",
        id="early-stopping",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.ResourceLimits.MaxJobs",
        3,
        "HyperParameterTuningJobConfig.ResourceLimits.MaxJobs",
        "unknown key",
        id="typo-key",
    ),
    pytest.param(
        "HyperParameterTuningJobName",
        "x" * 33,
        "HyperParameterTuningJobName",
        "limit is 32",
        id="long-name",
    ),
    pytest.param(
        f"{R}",
        {},
        f"{R}",
        "no ranges",
        id="no-ranges",
    ),
    pytest.param(
        "TrainingJobDefinition.StaticHyperParameters.optimizer",
        "adam",
        f"{R}.CategoricalParameterRanges[0].Name",
        "either fixed or tuned",
        id="static-and-tuned",
    ),
    pytest.param(
        "TrainingJobDefinition.AlgorithmSpecification.AlgorithmName",
        None,
        "TrainingJobDefinition.AlgorithmSpecification.AlgorithmName",
        "missing",
        id="no-algorithm",
    ),
    pytest.param(
        "HyperParameterTuningJobConfig.RandomSeed",
        "seven",
        "HyperParameterTuningJobConfig.RandomSeed",
        "integer",
        id="bad-seed",
    ),
]


@pytest.mark.parametrize(("path", "value", "key", "phrase"), BAD_INPUTS)
def test_bad_input_is_refused_naming_its_key(path: str, value: Any, key: str, phrase: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_request(with_change(path, value))
    message = caught.value.message
    assert message.startswith(f"{key}:"), message
    assert phrase in message


def test_grid_refuses_continuous_ranges() -> None:
    request = with_change("HyperParameterTuningJobConfig.Strategy", "Grid")
    with pytest.raises(
        InvalidInputError, match=r"ContinuousParameterRanges\[0\]: the Grid strategy"
    ):
        parse_request(request)


def test_grid_runs_the_whole_grid_by_default_and_refuses_more() -> None:
    request = with_change("HyperParameterTuningJobConfig.Strategy", "Grid")
    ranges = request["HyperParameterTuningJobConfig"]["ParameterRanges"]
    del ranges["ContinuousParameterRanges"]
    ranges["IntegerParameterRanges"][0].update(MinValue=1, MaxValue=3)
    del request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"]
    del request["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"]
    config = parse_request(request)
    assert grid_size(config.ranges) == 6
    assert config.max_jobs == 6
    request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] = 7
    with pytest.raises(InvalidInputError, match="grid has only 6 points"):
        parse_request(request)


def test_hyperband_refuses_auto_early_stopping_and_checks_resources() -> None:
    request = with_change("HyperParameterTuningJobConfig.Strategy", "Hyperband")
    with pytest.raises(InvalidInputError, match="Hyperband stops trials early by itself"):
        parse_request(request)
    request["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] = "Off"
    request["HyperParameterTuningJobConfig"]["StrategyConfig"] = {
        "HyperbandStrategyConfig": {"MinResource": 3, "MaxResource": 2}
    }
    with pytest.raises(InvalidInputError, match=r"MaxResource: 2 must be greater than MinResource"):
        parse_request(request)
    request["HyperParameterTuningJobConfig"]["StrategyConfig"]["HyperbandStrategyConfig"][
        "MaxResource"
    ] = 9
    config = parse_request(request)
    assert (config.hyperband_min_resource, config.hyperband_max_resource) == (3, 9)


def test_warm_start_parents_are_parsed_and_self_reference_refused() -> None:
    request = base_request()
    request["WarmStartConfig"] = {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "earlier"}],
        "WarmStartType": "TransferLearning",
    }
    config = parse_request(request)
    assert config.parents == ("earlier",) and config.warm_start_type == "TransferLearning"
    request["WarmStartConfig"]["ParentHyperParameterTuningJobs"] = ["idc-tune"]
    with pytest.raises(InvalidInputError, match="cannot warm-start from itself"):
        parse_request(request)


def test_the_tuning_tag_is_reserved() -> None:
    request = base_request()
    request["Tags"] = [{"Key": "bcd:tuning-job", "Value": "other"}]
    with pytest.raises(InvalidInputError, match=r"Tags\[0\].Key: 'bcd:tuning-job' is reserved"):
        parse_request(request)
