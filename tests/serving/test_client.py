"""``runtime_client().invoke_endpoint``: in-process and over HTTP, against the real registry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bcd
from bcd import registry
from bcd.config import Settings
from bcd.errors import (
    AuthenticationError,
    NotFoundError,
    NotReadyError,
    UnknownVariantError,
    UnsupportedMediaTypeError,
)
from bcd.serving import close_local_services, create_app
from tests.serving.conftest import png_bytes

PURPLE = png_bytes(np.full((50, 50, 3), (110, 50, 140), np.uint8))
PALE = png_bytes(np.full((50, 50, 3), 235, np.uint8))


@pytest.fixture
def deployed(
    settings: Settings, never_idc_model: Path, always_idc_model: Path
) -> Iterator[Settings]:
    """Endpoint ``ep`` on the real registry: variant ``no`` (never IDC) only."""
    registry.create_model("never", model_data=str(never_idc_model), settings=settings)
    registry.create_model("always", model_data=str(always_idc_model), settings=settings)
    for config, model in (("cfg-never", "never"), ("cfg-always", "always")):
        variant = {
            "VariantName": model,
            "ModelName": model,
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1.0,
        }
        registry.create_endpoint_config(config, [variant], settings=settings)
    registry.create_endpoint("ep", "cfg-never", settings=settings)
    yield settings
    close_local_services()


def answer(response: dict[str, object]) -> dict[str, object]:
    return json.loads(response["Body"].read())  # type: ignore[attr-defined]


def test_in_process_invoke_follows_updates(deployed: Settings) -> None:
    client = bcd.runtime_client(settings=deployed)
    response = client.invoke_endpoint(
        EndpointName="ep", ContentType="application/x-image", Body=PURPLE
    )
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "never"
    assert answer(response)["predicted_class"] == 0

    registry.update_endpoint("ep", "cfg-always", settings=deployed)
    time.sleep(1.1)  # the in-process router re-resolves at most once a second
    response = client.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=PURPLE)
    assert response["InvokedProductionVariant"] == "always"
    assert answer(response)["predicted_class"] == 1

    text = client.invoke_endpoint(
        EndpointName="ep", ContentType="image/png", Body=PALE, Accept="text/plain"
    )
    assert text["Body"].read() == b"Cancer detected"
    with pytest.raises(NotFoundError):
        client.invoke_endpoint(EndpointName="nope", ContentType="image/png", Body=PALE)
    with pytest.raises(UnsupportedMediaTypeError):
        client.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=b"x")


def test_in_process_invoke_accepts_file_objects(deployed: Settings, tmp_path: Path) -> None:
    path = tmp_path / "patch.png"
    path.write_bytes(PURPLE)
    client = bcd.runtime_client(settings=deployed)
    with path.open("rb") as handle:
        response = client.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=handle)
    assert answer(response)["predictions"][0]["message"] == "Cancer not detected"


def test_http_invoke_and_errors_come_back_typed(deployed: Settings, live_server) -> None:
    app = create_app(deployed, poll_interval_s=0.1)
    url = live_server(app)
    assert app.state.router.wait_ready(10)
    client = bcd.runtime_client(settings=deployed, endpoint_url=url)
    response = client.invoke_endpoint(
        EndpointName="ep", ContentType="image/png", Body=PURPLE, TTA=True
    )
    assert response["InvokedProductionVariant"] == "never"
    assert answer(response)["predicted_class"] == 0
    with pytest.raises(NotFoundError, match="does not exist"):
        client.invoke_endpoint(EndpointName="nope", ContentType="image/png", Body=PURPLE)
    with pytest.raises(UnknownVariantError):
        client.invoke_endpoint(
            EndpointName="ep", ContentType="image/png", Body=PURPLE, TargetVariant="x"
        )
    with pytest.raises(UnsupportedMediaTypeError):
        client.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=b"x")


def test_http_invoke_with_registry_keys(deployed: Settings, live_server) -> None:
    from bcd.registry import keys

    created = keys.create_api_key("tests", settings=deployed)
    app = create_app(deployed.model_copy(update={"require_api_key": True}), poll_interval_s=0.1)
    url = live_server(app)
    assert app.state.router.wait_ready(10)
    with pytest.raises(AuthenticationError):
        bcd.runtime_client(settings=deployed, endpoint_url=url).invoke_endpoint(
            EndpointName="ep", ContentType="image/png", Body=PURPLE
        )
    client = bcd.runtime_client(settings=deployed, endpoint_url=url, api_key=created.raw_key)
    response = client.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=PURPLE)
    assert answer(response)["predicted_class"] == 0


def test_unreachable_server_is_not_ready(settings: Settings) -> None:
    client = bcd.runtime_client(settings=settings, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(NotReadyError, match="is `bcd serve` running"):
        client.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=PURPLE)


def test_endpoint_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCD_ENDPOINT_URL", "http://10.0.0.1:8080/")
    monkeypatch.setenv("BCD_API_KEY", "k")
    client = bcd.runtime_client(settings=Settings())
    assert client.endpoint_url == "http://10.0.0.1:8080"
    assert client.api_key == "k"
