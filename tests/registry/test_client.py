"""The low-level client: boto3 SageMaker call shapes and waiters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bcd.clients import Client
from bcd.config import Settings
from bcd.errors import InvalidInputError, JobFailedError, NotFoundError
from tests.registry.helpers import variant


@pytest.fixture
def client(settings: Settings) -> Client:
    # Client() directly: importing the bcd.client package shadows the bcd.client() function.
    return Client(settings=settings)


def test_sagemaker_notebook_flow(
    client: Client,
    artifact: Callable[..., Path],
) -> None:
    folder = artifact("m1")
    created = client.create_model(
        ModelName="m1",
        PrimaryContainer={"ModelDataUrl": str(folder), "Image": "ignored"},
        ExecutionRoleArn="arn:aws:iam::123:role/ignored",
    )
    assert created == {"ModelArn": "arn:bcd:sagemaker:local:model/m1"}
    assert client.describe_model(ModelName="m1")["ModelName"] == "m1"
    assert [m["ModelName"] for m in client.list_models()["Models"]] == ["m1"]
    client.create_endpoint_config(
        EndpointConfigName="c1",
        ProductionVariants=[
            {**variant("A", "m1", 0.8), "InstanceType": "ml.m5.large"},
            variant("B", "m1", 0.2),
        ],
    )
    assert len(client.describe_endpoint_config(EndpointConfigName="c1")["ProductionVariants"]) == 2
    assert client.list_endpoint_configs(MaxResults=10)["EndpointConfigs"][0][
        "EndpointConfigName"
    ] == ("c1")
    arn = client.create_endpoint(EndpointName="e1", EndpointConfigName="c1")["EndpointArn"]
    assert arn == "arn:bcd:sagemaker:local:endpoint/e1"
    described = client.get_waiter("endpoint_in_service").wait(
        EndpointName="e1", WaiterConfig={"Delay": 0.01, "MaxAttempts": 5}
    )
    assert described["EndpointStatus"] == "InService"
    assert {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]} == {
        "A": 0.8,
        "B": 0.2,
    }
    listed = client.list_endpoints(StatusEquals="InService")["Endpoints"]
    assert [e["EndpointName"] for e in listed] == ["e1"]
    assert client.list_endpoints(StatusEquals="Failed")["Endpoints"] == []
    client.create_endpoint_config(EndpointConfigName="c2", ProductionVariants=[variant("C", "m1")])
    client.update_endpoint(EndpointName="e1", EndpointConfigName="c2")
    assert client.describe_endpoint(EndpointName="e1")["EndpointConfigName"] == "c2"
    assert client.delete_endpoint(EndpointName="e1") == {}
    client.get_waiter("endpoint_deleted").wait(EndpointName="e1")
    client.delete_endpoint_config(EndpointConfigName="c1")
    client.delete_endpoint_config(EndpointConfigName="c2")
    client.delete_model(ModelName="m1")
    assert client.list_models()["Models"] == []


def test_waiter_raises_on_a_failed_endpoint(
    client: Client,
    artifact: Callable[..., Path],
) -> None:
    folder = artifact("m1")
    client.create_model(ModelName="m1", PrimaryContainer={"ModelDataUrl": str(folder)})
    client.create_endpoint_config(EndpointConfigName="c1", ProductionVariants=[variant("A", "m1")])
    (folder / "model.onnx").unlink()
    client.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    with pytest.raises(JobFailedError, match="model m1"):
        client.get_waiter("endpoint_in_service").wait(EndpointName="e1")


def test_create_model_from_training_job_name(
    client: Client,
    artifact: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bcd.jobs

    folder = artifact("job")
    monkeypatch.setattr(
        bcd.jobs,
        "describe_training_job",
        lambda name, settings=None: {
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": str(folder)},
        },
    )
    client.create_model(ModelName="m1", TrainingJobName="job")
    assert client.describe_model(ModelName="m1")["ModelSource"]["TrainingJobName"] == "job"


@pytest.mark.parametrize(
    ("call", "kwargs", "fragment"),
    [
        ("create_model", {"ModelName": "m", "Colour": 1}, "unknown parameter"),
        ("create_model", {"PrimaryContainer": {"ModelDataUrl": "x"}}, "needs ModelName"),
        ("create_model", {"ModelName": "m", "PrimaryContainer": "x"}, "PrimaryContainer"),
        ("create_endpoint_config", {"EndpointConfigName": "c"}, "needs ProductionVariants"),
        ("create_endpoint", {"EndpointName": "e"}, "needs EndpointConfigName"),
        ("list_endpoints", {"StatusEquals": "Sleeping"}, "StatusEquals"),
    ],
)
def test_bad_calls_are_invalid_input(
    client: Client,
    call: str,
    kwargs: dict[str, object],
    fragment: str,
) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        getattr(client, call)(**kwargs)


def test_unknown_resources_are_not_found(
    client: Client,
) -> None:
    for call, kwargs in [
        ("describe_model", {"ModelName": "x"}),
        ("describe_endpoint_config", {"EndpointConfigName": "x"}),
        ("describe_endpoint", {"EndpointName": "x"}),
    ]:
        with pytest.raises(NotFoundError, match="none yet"):
            getattr(client, call)(**kwargs)
    with pytest.raises(NotFoundError):
        client.get_waiter("endpoint_in_service").wait(EndpointName="x")
