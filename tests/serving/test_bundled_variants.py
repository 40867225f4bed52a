"""The bundled endpoint as shipped: ``accurate`` by default, ``fast`` when pinned."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bcd import registry
from bcd.bundled import ACCURATE_MODEL_DIR, MODEL_DIR
from bcd.config import Settings
from bcd.serving import create_app


def _threshold(folder: Path) -> float:
    return float(json.loads((folder / "model.json").read_text()).get("decision_threshold", 0.5))


@pytest.fixture(scope="module")
def bundled_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server on a fresh home where the shipped bundled models were deployed."""
    settings = Settings(home=tmp_path_factory.mktemp("bundled") / "home")
    assert registry.ensure_bundled_endpoint(settings) == "bcd-default"
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert app.state.router.wait_ready(60)
        yield client


def _post(client: TestClient, path: str, body: bytes, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(path, content=body, headers={"Content-Type": "image/png", **headers})


@pytest.mark.parametrize("path", ["/predict-breast-cancer", "/endpoints/bcd-default/invocations"])
def test_unpinned_requests_go_to_the_default_variant(
    bundled_client: TestClient, idc_png: bytes, path: str
) -> None:
    answer = _post(bundled_client, path, idc_png)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert (document["variant"], document["model"]) == ("accurate", "bcd-bundled-accurate")
    assert answer.headers["X-Invoked-Production-Variant"] == "accurate"
    assert document["threshold"] == pytest.approx(_threshold(ACCURATE_MODEL_DIR))


@pytest.mark.parametrize("path", ["/predict-breast-cancer", "/endpoints/bcd-default/invocations"])
def test_a_pinned_request_reaches_the_fast_variant(
    bundled_client: TestClient, idc_png: bytes, path: str
) -> None:
    answer = _post(bundled_client, path, idc_png, **{"X-Target-Variant": "fast"})
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert (document["variant"], document["model"]) == ("fast", "bcd-bundled")
    assert answer.headers["X-Invoked-Production-Variant"] == "fast"
    assert document["threshold"] == pytest.approx(_threshold(MODEL_DIR))
    assert document["cancer_detected"] is True  # a clear IDC patch for the shipped fast model


def test_an_unknown_variant_is_a_404_naming_the_variants(
    bundled_client: TestClient, idc_png: bytes
) -> None:
    answer = _post(bundled_client, "/predict-breast-cancer", idc_png, **{"X-Target-Variant": "x"})
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "unknown_variant"
    assert "its variants are: accurate, fast" in error["message"]


def test_the_listing_shows_both_variants_with_their_thresholds(
    bundled_client: TestClient,
) -> None:
    listing = bundled_client.get("/endpoints").json()
    assert listing["DefaultEndpoint"] == "bcd-default"
    (endpoint,) = listing["Endpoints"]
    variants = {
        each["VariantName"]: (each["ModelName"], each["CurrentWeight"], each["DecisionThreshold"])
        for each in endpoint["ProductionVariants"]
    }
    assert variants == {
        "accurate": ("bcd-bundled-accurate", 1.0, pytest.approx(_threshold(ACCURATE_MODEL_DIR))),
        "fast": ("bcd-bundled", 0.0, pytest.approx(_threshold(MODEL_DIR))),
    }


def test_whole_slides_are_scored_by_the_fast_variant(bundled_client: TestClient) -> None:
    rng = np.random.default_rng(0)
    tissue = rng.integers(120, 200, (250, 300, 3), dtype=np.uint8)  # 5 x 6 tiles of "tissue"
    buffer = io.BytesIO()
    Image.fromarray(tissue).save(buffer, format="PNG")
    answer = bundled_client.post(
        "/slides",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/octet-stream"},
        params={"filename": "slide.png"},
    )
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 120
    described = answer.json()
    while described["status"] == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.1)
        described = bundled_client.get(f"/slides/{described['id']}").json()
    assert described["status"] == "Completed", described["failure_reason"]
    model = described["report"]["model"]
    assert (model["endpoint"], model["variant"], model["model"]) == (
        "bcd-default",
        "fast",
        "bcd-bundled",
    )
