"""The SDK takes what a SageMaker Python SDK v2 notebook passes, and refuses the unknown."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

import bcd.sdk
from bcd.config import Settings
from bcd.errors import InvalidInputError
from bcd.jobs._spec import parse_request
from bcd.sdk import (
    Estimator,
    HyperparameterTuner,
    IntegerParameter,
    Model,
    TrainingInput,
    image_uris,
)
from bcd.sdk._tuner import progress_line
from bcd.tuning import describe_tuning_job, list_trials

SCRIPTS = Path(__file__).resolve().parents[1] / "tuning" / "scripts"
ECR_IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def test_dir_lists_the_public_names() -> None:
    names = set(dir(bcd.sdk))
    expected = {"Estimator", "HyperparameterTuner", "Model", "Predictor", "TrainingInput"}
    assert expected | {"image_uris", "s3_input", "IntegerParameter"} <= names
    assert not {"Any", "annotations", "_HOMES"} & names
    for name in bcd.sdk.__all__:
        assert getattr(bcd.sdk, name) is not None
    assert bcd.sdk.s3_input is TrainingInput


@pytest.mark.parametrize(
    ("framework", "version", "expected"),
    [
        ("image-classification", "1", "bcd/image-classification:1"),
        ("cnn", None, "bcd/cnn:latest"),
        ("pytorch", "2.1", "bcd/script:2.1"),
    ],
)
def test_image_uris_retrieve(framework: str, version: str | None, expected: str) -> None:
    uri = image_uris.retrieve(framework, "eu-west-1", version, py_version="py310")
    assert uri == expected
    assert image_uris.get_image_uri("us-east-1", "image-classification") == (
        "bcd/image-classification:1"
    )


def test_image_uris_refuse_unknown_frameworks_and_arguments() -> None:
    with pytest.raises(InvalidInputError, match="choose one of image-classification, cnn"):
        image_uris.retrieve("xgboost", "us-east-1")
    with pytest.raises(InvalidInputError, match=r"unknown argument.*colour.*accepted"):
        image_uris.retrieve("cnn", colour="red")


def _notebook_estimator(settings: Settings, **overrides: Any) -> Estimator:
    arguments: dict[str, Any] = {
        "image_uri": ECR_IMAGE,
        "role": ROLE,
        "instance_count": 1,
        "instance_type": "ml.p2.xlarge",
        "volume_size": 50,
        "max_run": 3600,
        "input_mode": "Pipe",
        "output_path": "s3://bucket/output",
        "sagemaker_session": object(),
        "hyperparameters": {"num_layers": 18, "epochs": 2},
        "max_wait": 7200,
        "use_spot_instances": True,
        "subnets": ["subnet-1"],
        "settings": settings,
    }
    arguments.update(overrides)
    return Estimator(**arguments)


def test_estimator_takes_a_notebooks_arguments(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bcd.sdk"):
        estimator = _notebook_estimator(settings)
    assert estimator.algorithm == "image-classification"
    assert estimator.sagemaker_arguments == {
        "max_wait": 7200,
        "use_spot_instances": True,
        "subnets": ["subnet-1"],
    }
    notes = caplog.text
    for noted in ("role", "sagemaker_session", "max_wait", "use_spot_instances", "subnets"):
        assert f"{noted} is a SageMaker setting with no effect" in notes
    assert estimator.hyperparameters() == {"num_layers": 18, "epochs": 2}
    assert estimator.hyperparameters["epochs"] == 2

    train = TrainingInput(
        "dataset://idc/train", content_type="application/x-recordio", distribution="ShardedByS3Key"
    )
    request = estimator.training_job_request(
        {"train": train, "validation": "dataset://idc/validation"}, "nb-job"
    )
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "Pipe"
    assert request["ResourceConfig"] == {
        "InstanceCount": 1,
        "InstanceType": "ml.p2.xlarge",
        "VolumeSizeInGB": 50,
    }
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://bucket/output"}
    assert request["RoleArn"] == ROLE
    assert request["InputDataConfig"][0]["ContentType"] == "application/x-recordio"
    # The job engine accepts the request as it is.
    spec = parse_request(request)
    assert (spec.algorithm, spec.input_mode, spec.volume_size_gb) == (
        "image-classification",
        "Pipe",
        50,
    )
    assert [(c.name, c.uri) for c in spec.channels] == [
        ("train", "dataset://idc/train"),
        ("validation", "dataset://idc/validation"),
    ]


def test_estimator_takes_sagemakers_positional_order(settings: Settings) -> None:
    container = image_uris.retrieve("cnn", "us-east-1")
    estimator = Estimator(container, ROLE, 2, "ml.m5.xlarge", settings=settings)
    assert (estimator.algorithm, estimator.role) == ("cnn", ROLE)
    assert (estimator.instance_count, estimator.instance_type) == (2, "ml.m5.xlarge")
    assert estimator.base_job_name == "cnn"


def test_a_sagemaker_v1_channel_object_is_read_through_its_config(settings: Settings) -> None:
    class SageMakerInput:  # what sagemaker.inputs.TrainingInput holds
        def __init__(self) -> None:
            self.config = {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "/data/train"}},
                "ContentType": "application/x-image",
            }

    estimator = Estimator(algorithm="cnn", settings=settings)
    request = estimator.training_job_request(SageMakerInput(), "v1-job")
    assert parse_request(request).channels[0].uri == "/data/train"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"volume_sise": 50}, "unknown argument.*volume_sise.*volume_size", id="typo"),
        pytest.param({"image_uri": "bcd/xgboost:1"}, "names no bcd algorithm", id="image"),
        pytest.param({"input_mode": "Stream"}, "File, Pipe or FastFile", id="input-mode"),
        pytest.param(
            {"image_uri": "bcd/cnn:1", "algorithm": "image-classification"},
            "different algorithms",
            id="two-algorithms",
        ),
    ],
)
def test_estimator_refuses_with_a_clear_error(
    kwargs: dict[str, Any], message: str, settings: Settings
) -> None:
    kwargs.setdefault("image_uri", "bcd/cnn:1")
    with pytest.raises(InvalidInputError, match=message):
        Estimator(settings=settings, **kwargs)


def test_training_input_refuses_bad_values() -> None:
    with pytest.raises(InvalidInputError, match="s3_data"):
        TrainingInput("")
    with pytest.raises(InvalidInputError, match="input_mode"):
        TrainingInput("dataset://idc/train", input_mode="Stream")
    with pytest.raises(InvalidInputError, match="TrainingInput"):
        Estimator(algorithm="cnn").training_job_request({"train": 3}, "bad-channel")


def test_model_and_deploy_take_sagemaker_arguments(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bcd.sdk"):
        model = Model(
            model_data="/models/cnn",
            image_uri=image_uris.retrieve("cnn", "us-east-1"),
            role=ROLE,
            predictor_cls=object,
            sagemaker_session=object(),
            settings=settings,
        )
    assert (model.image_uri, model.role) == ("bcd/cnn:latest", ROLE)
    assert set(model.sagemaker_arguments) == {"predictor_cls", "sagemaker_session"}
    assert "image_uri is a SageMaker setting" in caplog.text
    with pytest.raises(InvalidInputError, match=r"unknown argument.*flavour.*serializer"):
        model.deploy(initial_instance_count=1, instance_type="ml.m5.large", flavour="x")
    with pytest.raises(InvalidInputError, match=r"unknown argument.*colour.*model_data"):
        Model(model_data="/models/cnn", colour="red", settings=settings)


def test_tuner_takes_sagemakers_order_and_refuses_unknown_arguments(settings: Settings) -> None:
    estimator = Estimator(algorithm="cnn", settings=settings)
    definitions = [{"Name": "val:f1", "Regex": "f1=([0-9.]+)"}]
    tuner = HyperparameterTuner(
        estimator,
        "val:f1",
        {"epochs": IntegerParameter(1, 3)},
        definitions,
        "Random",
        "Maximize",
        4,
        2,
        max_runtime_in_seconds=600,
        tags=[{"Key": "team", "Value": "path"}],
    )
    assert (tuner.metric_definitions, tuner.strategy, tuner.max_jobs) == (definitions, "Random", 4)
    assert set(tuner.sagemaker_arguments) == {"max_runtime_in_seconds", "tags"}
    with pytest.raises(InvalidInputError, match=r"unknown argument.*max_job.*max_jobs"):
        HyperparameterTuner(estimator, "val:f1", {"epochs": IntegerParameter(1, 3)}, max_job=3)
    with pytest.raises(InvalidInputError, match=r"unknown argument.*logz"):
        tuner.fit("dataset://idc/train", logz=True)


def test_tuner_fit_shows_progress_of_a_real_tuning_job(settings: Settings) -> None:
    estimator = Estimator(
        entry_point="quick_train.py",
        source_dir=str(SCRIPTS),
        hyperparameters={"epochs": 2, "epoch_seconds": 0.05},
        metric_definitions=[{"Name": "score", "Regex": r"score=([0-9.eE+-]+)"}],
        settings=settings,
    )
    tuner = HyperparameterTuner(
        estimator,
        "score",
        {"mini_batch_size": IntegerParameter(16, 64)},
        max_jobs=2,
        random_seed=3,
    )
    progress = io.StringIO()
    tuner.fit(
        job_name="sdk-progress",
        include_cls_metadata=False,
        estimator_kwargs=None,
        logs=True,
        stream=progress,
    )
    lines = progress.getvalue().splitlines()
    description = describe_tuning_job("sdk-progress", settings)
    assert description["HyperParameterTuningJobStatus"] == "Completed"
    assert lines[-1] == progress_line(description)
    assert "trials 2/2 ended (2 completed" in lines[-1]
    assert "best score=" in lines[-1] and tuner.best_training_job() in lines[-1]
    assert len(lines) >= 2 and len(set(lines)) == len(lines)
    assert len(list_trials("sdk-progress", settings)) == 2
