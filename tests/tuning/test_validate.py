"""Requests checked against the algorithm: unknown hyperparameters, refused values, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.errors import InvalidInputError
from bcd.tuning import load_request_file, validate_request

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tuning"
RANGES = "HyperParameterTuningJobConfig.ParameterRanges"


@pytest.fixture
def resnet_request() -> dict:  # type: ignore[type-arg]
    return load_request_file(EXAMPLES / "image_classification.yaml")


def test_the_example_config_is_valid(resnet_request: dict, settings: Settings) -> None:  # type: ignore[type-arg]
    config = validate_request(resnet_request, settings)
    assert {r.name for r in config.ranges} == {"optimizer", "learning_rate", "mini_batch_size"}


def test_a_range_for_a_hyperparameter_the_algorithm_lacks_is_refused(
    resnet_request: dict,  # type: ignore[type-arg]
    settings: Settings,
) -> None:
    resnet_request["HyperParameterTuningJobConfig"]["ParameterRanges"][
        "IntegerParameterRanges"
    ].append({"Name": "dropout_layers", "MinValue": 1, "MaxValue": 3})
    with pytest.raises(InvalidInputError) as caught:
        validate_request(resnet_request, settings)
    assert caught.value.message.startswith(f"{RANGES}.IntegerParameterRanges[1]:")
    assert "dropout_layers" in caught.value.message


def test_a_bound_the_algorithm_refuses_is_refused(resnet_request: dict, settings: Settings) -> None:  # type: ignore[type-arg]
    resnet_request["HyperParameterTuningJobConfig"]["ParameterRanges"][
        "CategoricalParameterRanges"
    ][0]["Values"] = ["sgd", "lbfgs"]
    with pytest.raises(
        InvalidInputError, match=rf"^{RANGES}.CategoricalParameterRanges\[0\]: .*lbfgs"
    ):
        validate_request(resnet_request, settings)


def test_an_objective_the_algorithm_does_not_emit_is_refused(
    resnet_request: dict,  # type: ignore[type-arg]
    settings: Settings,
) -> None:
    resnet_request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"][
        "MetricName"
    ] = "validation:kappa"
    with pytest.raises(
        InvalidInputError, match="'validation:kappa' is not a metric any trial emits"
    ):
        validate_request(resnet_request, settings)


def test_an_unknown_algorithm_is_refused(resnet_request: dict, settings: Settings) -> None:  # type: ignore[type-arg]
    resnet_request["TrainingJobDefinition"]["AlgorithmSpecification"]["AlgorithmName"] = "xgboost"
    with pytest.raises(
        InvalidInputError, match=r"^TrainingJobDefinition.AlgorithmSpecification.AlgorithmName:"
    ):
        validate_request(resnet_request, settings)


def test_the_cli_refuses_a_bad_config_with_the_key_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bcd.cli.main import main

    config = tmp_path / "bad.yaml"
    text = (EXAMPLES / "image_classification.yaml").read_text()
    config.write_text(text.replace("MaxParallelTrainingJobs: 2", "MaxParallelTrainingJobs: 0"))
    with pytest.raises(SystemExit) as exited:
        main(["tune", str(config)])
    assert exited.value.code == 2
    error = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "ResourceLimits.MaxParallelTrainingJobs: must be at least 1, got 0" in error
