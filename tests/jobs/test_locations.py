"""Data and output locations are checked when a job is created, not after it trained.

The missing ``s3fs`` package is simulated: its fsspec registration is removed
and its import made to fail, so the installed package stays as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import bcd
from bcd.cli.main import main
from bcd.config import Settings
from bcd.errors import InvalidInputError, NotFoundError
from bcd.jobs import TrainingJobService, check_data_locations
from bcd.jobs._spec import check_storage_url, parse_request

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def without_s3fs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``s3://`` look as it does where ``bcd[s3]`` is not installed."""
    registry = sys.modules["fsspec.registry"]
    for scheme in ("s3", "s3a"):
        monkeypatch.delitem(registry._registry, scheme, raising=False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "s3fs", None)


def _request(name: str, train_uri: str, **extra: Any) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "AlgorithmName": "script",
            "MetricDefinitions": [{"Name": "train:loss", "Regex": r"train:loss=([0-9.]+)"}],
        },
        "HyperParameters": {
            "sagemaker_program": "train_ok.py",
            "sagemaker_submit_directory": str(SCRIPTS),
        },
        "InputDataConfig": [
            {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": train_uri}}}
        ],
        **extra,
    }


@pytest.mark.parametrize(
    ("extra", "train_uri", "key"),
    [
        ({"OutputDataConfig": {"S3OutputPath": "s3://bucket/out"}}, None, "OutputDataConfig"),
        ({"CheckpointConfig": {"S3Uri": "s3://bucket/ckpt"}}, None, "CheckpointConfig.S3Uri"),
        ({}, "s3://bucket/train", r"InputDataConfig\[0\]"),
    ],
    ids=["output", "checkpoint", "channel"],
)
def test_s3_locations_without_s3fs_are_refused_at_create(
    without_s3fs: None,
    job_settings: Settings,
    train_dir: Path,
    extra: dict[str, Any],
    train_uri: str | None,
    key: str,
) -> None:
    request = _request("no-s3fs", train_uri or str(train_dir), **extra)
    with pytest.raises(InvalidInputError, match=rf"{key}.*install bcd\[s3\]"):
        TrainingJobService(job_settings).create(request)
    with pytest.raises(NotFoundError):
        TrainingJobService(job_settings).describe("no-s3fs")  # nothing was recorded


def test_the_client_refuses_an_s3_output_without_s3fs(
    without_s3fs: None, job_settings: Settings, train_dir: Path
) -> None:
    client = bcd.client(settings=job_settings)
    request = _request(
        "client-no-s3fs", str(train_dir), OutputDataConfig={"S3OutputPath": "s3://b/o"}
    )
    with pytest.raises(InvalidInputError, match=r"pip install 'bcd\[s3\]'"):
        client.create_training_job(**request)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("OutputDataConfig", {"S3OutputPath": "foo://bucket/out"}),
        ("CheckpointConfig", {"S3Uri": "dataset://idc/train"}),
    ],
    ids=["output", "dataset-as-checkpoint"],
)
def test_unknown_url_schemes_are_refused(train_dir: Path, field: str, value: dict) -> None:
    with pytest.raises(InvalidInputError, match="unknown URL scheme"):
        parse_request(_request("odd-scheme", str(train_dir), **{field: value}))


def test_an_unknown_channel_scheme_is_refused_before_any_connection() -> None:
    with pytest.raises(InvalidInputError, match=r"InputDataConfig\[0\].*unknown URL scheme nope"):
        parse_request(_request("odd-channel", "nope://somewhere/train"))


def test_locations_that_can_be_opened_are_accepted(train_dir: Path) -> None:
    spec = parse_request(
        _request(
            "fine",
            str(train_dir),
            OutputDataConfig={"S3OutputPath": "s3://bucket/out"},
            CheckpointConfig={"S3Uri": f"file://{train_dir}"},
        )
    )
    assert spec.output_path == "s3://bucket/out"
    for url in ("dataset://idc/train", "/some/folder", "memory://x"):
        check_storage_url(url, "InputDataConfig[0]", channel=True)


def test_tuning_job_creation_checks_the_definitions_locations(
    without_s3fs: None, settings: Settings
) -> None:
    from bcd.tuning import create_tuning_job, list_tuning_jobs

    request = {
        "HyperParameterTuningJobName": "tune-no-s3fs",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "learning_rate", "MinValue": 1e-4, "MaxValue": 1e-1}
                ]
            },
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "AlgorithmName": "script",
                "MetricDefinitions": [{"Name": "score", "Regex": "score=([0-9.]+)"}],
            },
            "StaticHyperParameters": {"sagemaker_program": "train.py"},
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/tuning"},
        },
    }
    with pytest.raises(
        InvalidInputError,
        match=r"TrainingJobDefinition\.OutputDataConfig\.S3OutputPath.*install bcd\[s3\]",
    ):
        create_tuning_job(request, settings, start=False)
    assert list_tuning_jobs(settings=settings) == []


def test_check_data_locations_prefixes_key_paths(without_s3fs: None) -> None:
    definition = {"InputDataConfig": [{"ChannelName": "train", "Uri": "s3://b/t"}]}
    with pytest.raises(InvalidInputError, match=r"^Def\.InputDataConfig\[0\]"):
        check_data_locations(definition, "Def.")


def test_bcd_train_refuses_an_s3_channel_without_s3fs(
    without_s3fs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--algorithm", "script", "--entry-point", "train_ok.py"]
    argv += ["--source-dir", str(SCRIPTS), "--train", "s3://bucket/train", "--name", "cli-s3"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "install bcd[s3]" in capsys.readouterr().err.replace("\n", " ")
