"""The boto3-like client and the Estimator on small script-mode jobs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bcd.clients import Client
from bcd.config import Settings
from bcd.errors import InvalidInputError, JobFailedError, NotFoundError
from bcd.jobs import _store
from bcd.jobs._tables import TrainingJobRecord
from bcd.sdk import Estimator

from .conftest import SCRIPTS

METRICS = [{"Name": "train:loss", "Regex": r"train:loss=([0-9.]+)"}]


def _request(name: str, train_dir: Path, script: str = "train_ok.py") -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "bcd/script:latest",
            "TrainingInputMode": "File",
            "MetricDefinitions": METRICS,
        },
        "HyperParameters": {
            "sagemaker_program": script,
            "sagemaker_submit_directory": str(SCRIPTS),
            "epochs": "2",
        },
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(train_dir)}},
            }
        ],
        "OutputDataConfig": {"S3OutputPath": str(train_dir.parent / "output")},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }


def test_client_round_trip_like_boto3(job_settings: Settings, train_dir: Path) -> None:
    client = Client(settings=job_settings)
    response = client.create_training_job(**_request("client-job", train_dir))
    assert response["TrainingJobArn"].endswith(":training-job/client-job")

    waiter = client.get_waiter("training_job_completed_or_stopped")
    job = waiter.wait(TrainingJobName="client-job", WaiterConfig={"Delay": 0.2})
    assert job["TrainingJobStatus"] == "Completed"
    assert job["HyperParameters"]["epochs"] == "2"
    assert job["HyperParameters"]["sagemaker_program"] == "train_ok.py"
    assert job["ResourceConfig"] == {
        "InstanceCount": 1,
        "InstanceType": "ml.m5.large",
        "VolumeSizeInGB": 5,
    }
    # OutputDataConfig.S3OutputPath puts the model at <path>/<job>/output/model.
    model = Path(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert model == (train_dir.parent / "output" / "client-job" / "output" / "model").resolve()
    assert (model / "model.txt").read_text() == "trained 2 epochs"
    assert [m["MetricName"] for m in job["FinalMetricDataList"]] == ["train:loss"]

    with pytest.raises(NotFoundError):
        client.describe_training_job(TrainingJobName="no-such-job")
    with pytest.raises(InvalidInputError, match="training_job_completed_or_stopped"):
        client.get_waiter("endpoint_in_service_typo")


def test_waiter_raises_on_a_failed_job(job_settings: Settings, train_dir: Path) -> None:
    client = Client(settings=job_settings)
    client.create_training_job(**_request("fail-1", train_dir, "crash.py"))
    with pytest.raises(JobFailedError, match="learning rate exploded"):
        client.get_waiter("training_job_completed_or_stopped").wait(
            TrainingJobName="fail-1", WaiterConfig={"Delay": 0.2}
        )
    with pytest.raises(JobFailedError):  # waiting again on an ended job answers at once
        client.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName="fail-1")


def test_list_training_jobs_pages_and_filters(job_settings: Settings) -> None:
    for name, tuning_job in (("list-a", None), ("list-b", "tune-x"), ("list-c", "tune-x")):
        tags = [{"Key": "bcd:tuning-job", "Value": tuning_job}] if tuning_job else []
        _store.insert_job(
            TrainingJobRecord(
                name=name,
                algorithm="cnn",
                spec={},
                hyperparameters={},
                tags=tags,
                tuning_job_name=tuning_job,
                status="Completed",
                secondary_status="Completed",
                workdir=str(job_settings.home / "jobs" / name),
                host="elsewhere",
            ),
            job_settings,
        )
    client = Client(settings=job_settings)
    first = client.list_training_jobs(MaxResults=2, SortBy="Name", SortOrder="Ascending")
    assert [job["TrainingJobName"] for job in first["TrainingJobSummaries"]] == ["list-a", "list-b"]
    second = client.list_training_jobs(
        MaxResults=2, SortBy="Name", SortOrder="Ascending", NextToken=first["NextToken"]
    )
    assert [job["TrainingJobName"] for job in second["TrainingJobSummaries"]] == ["list-c"]
    assert "NextToken" not in second
    trials = client.list_training_jobs(TuningJobName="tune-x", SortOrder="Ascending", SortBy="Name")
    assert [job["TuningJobName"] for job in trials["TrainingJobSummaries"]] == ["tune-x"] * 2
    assert [
        j["TrainingJobName"]
        for j in client.list_training_jobs(NameContains="-c")["TrainingJobSummaries"]
    ] == ["list-c"]
    assert client.list_training_jobs(StatusEquals="Failed")["TrainingJobSummaries"] == []
    with pytest.raises(InvalidInputError, match="MaxResults"):
        client.list_training_jobs(MaxResults=0)
    with pytest.raises(InvalidInputError, match="unknown status"):
        client.list_training_jobs(StatusEquals="Done")
    with pytest.raises(InvalidInputError, match="NextToken"):
        client.list_training_jobs(NextToken="abc")


def test_estimator_fit_streams_logs_like_the_notebooks(
    job_settings: Settings, train_dir: Path
) -> None:
    estimator = Estimator(
        entry_point="train_ok.py",
        source_dir=str(SCRIPTS),
        hyperparameters={"epochs": 2, "learning-rate": 0.5},
        metric_definitions=METRICS,
        settings=job_settings,
    )
    stream = io.StringIO()
    job = estimator.fit({"train": str(train_dir)}, job_name="est-job", wait=False)
    description = job.wait(logs=True, stream=stream)
    assert description["TrainingJobStatus"] == "Completed"
    assert "epoch=2 train:loss=0.3333" in stream.getvalue()
    assert estimator.latest_training_job is job
    assert Path(estimator.model_data or "").joinpath("model.txt").is_file()


def test_estimator_fit_raises_when_the_job_fails(job_settings: Settings, train_dir: Path) -> None:
    estimator = Estimator(
        entry_point="crash.py",
        source_dir=str(SCRIPTS),
        metric_definitions=METRICS,
        settings=job_settings,
    )
    with pytest.raises(JobFailedError, match="ValueError"):
        estimator.fit(str(train_dir), job_name="est-crash", logs=False)
    assert estimator.latest_training_job is not None
    assert estimator.latest_training_job.describe()["TrainingJobStatus"] == "Failed"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"algorithm": "cnn", "entry_point": "train.py"}, {"algorithm": "script"}],
    ids=["neither", "both", "script-without-entry-point"],
)
def test_estimator_refuses_an_unclear_algorithm(kwargs: dict, job_settings: Settings) -> None:
    with pytest.raises(InvalidInputError):
        Estimator(settings=job_settings, **kwargs)


def test_model_data_needs_a_job(job_settings: Settings) -> None:
    with pytest.raises(InvalidInputError, match="fit"):
        _ = Estimator(algorithm="cnn", settings=job_settings).model_data
