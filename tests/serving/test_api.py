"""The REST API: routes, answers, content negotiation, limits, keys and errors."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bcd.config import Settings
from bcd.serving import InMemoryEndpointSource, create_app
from tests.serving.conftest import endpoint_spec, png_bytes

PALE = np.full((50, 50, 3), 235, np.uint8)
PURPLE = np.full((50, 50, 3), (110, 50, 140), np.uint8)


def raw(client: TestClient, path: str, body: bytes, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(
        path, content=body, headers={"Content-Type": "application/x-image", **headers}
    )


def assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_predict_real_patches_of_both_classes(
    client: TestClient, idc_png: bytes, no_idc_png: bytes
) -> None:
    idc = raw(client, "/predict-breast-cancer", idc_png)
    assert idc.status_code == 200
    document = idc.json()
    assert document["message"] == "Cancer detected" and document["cancer_detected"] is True
    assert document["predicted_class"] == 1
    assert document["model"] == "model-main" and document["variant"] == "main"
    assert document["predictions"][0]["probabilities"] == document["probabilities"]
    assert sum(document["probabilities"]) == pytest.approx(1.0)
    assert idc.headers["X-Invoked-Production-Variant"] == "main"

    clear = raw(client, "/predict-breast-cancer", no_idc_png)
    assert clear.json()["message"] == "Cancer not detected"
    assert clear.json()["predicted_class"] == 0


def test_accept_text_plain_gives_the_message(client: TestClient, idc_png: bytes) -> None:
    response = raw(client, "/predict-breast-cancer", idc_png, Accept="text/plain")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Cancer detected"


def test_batches_in_every_body_format(client: TestClient) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.stack([PALE, PURPLE, PALE]))
    npy = client.post(
        "/endpoints/ep/invocations",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/x-npy"},
    ).json()
    assert [p["predicted_class"] for p in npy["predictions"]] == [0, 1, 0]
    assert "message" not in npy  # top-level fields only for a single image

    files = [
        ("files", (f"{i}.png", png_bytes(a), "image/png")) for i, a in enumerate([PURPLE, PALE])
    ]
    multipart = client.post("/endpoints/ep/invocations", files=files).json()
    assert [p["predicted_class"] for p in multipart["predictions"]] == [1, 0]

    instances = client.post(
        "/endpoints/ep/invocations", json={"instances": [PURPLE.tolist()]}
    ).json()
    assert instances["predicted_class"] == 1

    encoded = [base64.b64encode(png_bytes(a)).decode() for a in (PALE, PURPLE)]
    images = client.post("/endpoints/ep/invocations", json={"images": encoded}).json()
    assert [p["predicted_class"] for p in images["predictions"]] == [0, 1]
    np.testing.assert_allclose(
        images["predictions"][1]["probabilities"], multipart["predictions"][0]["probabilities"]
    )


def test_text_plain_for_a_batch_has_one_line_per_image(client: TestClient) -> None:
    encoded = [base64.b64encode(png_bytes(a)).decode() for a in (PALE, PURPLE)]
    response = client.post(
        "/endpoints/ep/invocations", json={"images": encoded}, headers={"Accept": "text/plain"}
    )
    assert response.text.splitlines() == ["Cancer not detected", "Cancer detected"]


def test_tta_flag_is_accepted(client: TestClient) -> None:
    response = raw(client, "/endpoints/ep/invocations?tta=true", png_bytes(PURPLE))
    assert response.status_code == 200
    assert_error(
        raw(client, "/endpoints/ep/invocations?tta=maybe", png_bytes(PURPLE)), 400, "invalid_input"
    )


def test_error_statuses(client: TestClient, idc_png: bytes) -> None:
    assert_error(
        client.post("/predict-breast-cancer", content=b"a,b", headers={"Content-Type": "text/csv"}),
        415,
        "unsupported_media_type",
    )
    assert_error(
        raw(client, "/predict-breast-cancer", b"\x89PNG\r\n\x1a\n broken"), 400, "invalid_input"
    )
    assert_error(raw(client, "/endpoints/missing/invocations", idc_png), 404, "not_found")
    assert_error(
        raw(client, "/endpoints/ep/invocations", idc_png, **{"X-Target-Variant": "nope"}),
        404,
        "unknown_variant",
    )
    assert_error(
        raw(client, "/predict-breast-cancer", idc_png, **{"X-Target-Variant": "nope"}),
        404,
        "unknown_variant",
    )
    assert_error(client.get("/no-such-route"), 404, "not_found")
    assert_error(client.put("/predict-breast-cancer"), 405, "method_not_allowed")


def test_body_limit_is_enforced_while_streaming(
    make_client: Callable[..., TestClient], serving_settings: Settings
) -> None:
    client = make_client(serving_settings.model_copy(update={"max_body_bytes": 1000}))
    assert_error(raw(client, "/predict-breast-cancer", b"x" * 1001), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold mid-stream
        for _ in range(100):
            yield b"y" * 100

    response = client.post(
        "/predict-breast-cancer", content=chunks(), headers={"Content-Type": "image/png"}
    )
    assert_error(response, 413, "payload_too_large")


def test_pixel_limit(make_client: Callable[..., TestClient], serving_settings: Settings) -> None:
    client = make_client(serving_settings.model_copy(update={"max_image_pixels": 2000}))
    assert_error(raw(client, "/predict-breast-cancer", png_bytes(PALE)), 413, "payload_too_large")


def test_not_ready_until_models_load(serving_settings: Settings, tmp_path: Path) -> None:
    source = InMemoryEndpointSource([endpoint_spec("ep", [("A", tmp_path / "missing", 1.0)])])
    app = create_app(serving_settings, source=source, poll_interval_s=0.05)
    with TestClient(app) as client:
        assert app.state.router.wait_ready(10)
        assert client.get("/healthz").json() == {"status": "ok"}
        assert_error(client.get("/readyz"), 503, "not_ready")
        assert_error(raw(client, "/predict-breast-cancer", png_bytes(PALE)), 503, "not_ready")


def test_readyz_and_endpoint_listing(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ready", "endpoints": ["ep"]}
    listing = client.get("/endpoints").json()
    assert [item["EndpointName"] for item in listing["Endpoints"]] == ["ep"]
    assert listing["DefaultEndpoint"] == "ep"  # behind POST /predict-breast-cancer
    described = client.get("/endpoints/ep").json()
    assert described["EndpointStatus"] == "InService"
    assert described["ProductionVariants"][0]["VariantName"] == "main"
    assert_error(client.get("/endpoints/zzz"), 404, "not_found")


def test_metrics_count_requests_latency_and_batches(client: TestClient) -> None:
    for _ in range(3):
        raw(client, "/predict-breast-cancer", png_bytes(PALE))
    raw(client, "/predict-breast-cancer", b"junk")
    text = client.get("/metrics").text
    assert 'bcd_invocations_total{endpoint="ep",outcome="ok",variant="main"} 3.0' in text
    assert 'bcd_http_requests_total{route="/predict-breast-cancer",status="400"} 1.0' in text
    assert 'bcd_invocation_latency_seconds_count{endpoint="ep",variant="main"} 3.0' in text
    assert 'bcd_batch_size_count{endpoint="ep",variant="main"}' in text
    assert "bcd_loaded_endpoints 1.0" in text


def test_invocations_are_flushed_to_the_registry(
    serving_settings: Settings, source: InMemoryEndpointSource
) -> None:
    app = create_app(serving_settings, source=source, poll_interval_s=0.05)
    with TestClient(app) as client:
        assert app.state.router.wait_ready(10)
        for _ in range(4):
            raw(client, "/predict-breast-cancer", png_bytes(PALE))
    count, latency_ms, errors = source.invocations[("ep", "main")]
    assert count == 4 and errors == 0 and latency_ms > 0


@pytest.fixture
def keyed(
    make_client: Callable[..., TestClient],
    serving_settings: Settings,
    source: InMemoryEndpointSource,
) -> TestClient:
    source.add_api_key("good-key")
    source.add_api_key("old-key")
    source.revoke_api_key("old-key")
    return make_client(serving_settings.model_copy(update={"host": "0.0.0.0"}))


def test_keys_are_required_off_loopback(keyed: TestClient) -> None:
    body = png_bytes(PALE)
    assert_error(raw(keyed, "/predict-breast-cancer", body), 401, "unauthenticated")
    assert raw(keyed, "/predict-breast-cancer", body).headers["WWW-Authenticate"] == "Bearer"
    assert_error(
        raw(keyed, "/predict-breast-cancer", body, Authorization="Bearer wrong"),
        401,
        "unauthenticated",
    )
    assert_error(
        raw(keyed, "/predict-breast-cancer", body, **{"X-API-Key": "old-key"}),
        403,
        "permission_denied",
    )
    assert (
        raw(keyed, "/predict-breast-cancer", body, Authorization="Bearer good-key").status_code
        == 200
    )
    assert (
        raw(keyed, "/predict-breast-cancer", body, **{"X-API-Key": "good-key"}).status_code == 200
    )
    assert_error(keyed.get("/endpoints"), 401, "unauthenticated")
    assert keyed.get("/healthz").status_code == 200


def test_require_api_key_setting_overrides_the_host(
    make_client: Callable[..., TestClient], serving_settings: Settings
) -> None:
    local = make_client(serving_settings.model_copy(update={"require_api_key": True}))
    assert_error(raw(local, "/predict-breast-cancer", png_bytes(PALE)), 401, "unauthenticated")
    public = make_client(
        serving_settings.model_copy(update={"host": "0.0.0.0", "require_api_key": False})
    )
    assert raw(public, "/predict-breast-cancer", png_bytes(PALE)).status_code == 200


def test_cors_is_off_unless_configured(
    make_client: Callable[..., TestClient], serving_settings: Settings
) -> None:
    preflight = {"Origin": "https://lab.example", "Access-Control-Request-Method": "POST"}
    closed = make_client()
    assert (
        "access-control-allow-origin"
        not in closed.options("/predict-breast-cancer", headers=preflight).headers
    )
    opened = make_client(
        serving_settings.model_copy(update={"cors_origins": ["https://lab.example"]})
    )
    response = opened.options("/predict-breast-cancer", headers=preflight)
    assert response.headers["access-control-allow-origin"] == "https://lab.example"


def test_openapi_documents_bodies_and_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/predict-breast-cancer"]["post"]
    content = operation["requestBody"]["content"]
    assert {
        "application/x-image",
        "application/json",
        "multipart/form-data",
        "application/x-npy",
    } <= set(content)
    assert "examples" in content["application/json"]
    assert {"200", "400", "413", "415", "503"} <= set(operation["responses"])
    assert "/endpoints/{name}/invocations" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_unexpected_errors_are_generic_500s(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    async def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "invoke", explode)
    response = raw(client, "/predict-breast-cancer", png_bytes(PALE))
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text
    assert "secret internals" in caplog.text


def test_web_files_are_served_at_root_when_present(
    make_client: Callable[..., TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bcd.serving.app as app_module

    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<h1>bcd</h1>")
    monkeypatch.setattr(app_module, "WEB_DIR", web)
    client = make_client()
    assert client.get("/").text == "<h1>bcd</h1>"
    assert client.get("/healthz").json() == {"status": "ok"}


def test_logs_hold_no_image_bytes_or_file_names(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="bcd")
    body = png_bytes(PURPLE)
    files = [("files", ("10253_idx5_x1_y1_class1.png", b"broken", "image/png"))]
    client.post("/endpoints/ep/invocations", files=files)
    raw(client, "/predict-breast-cancer", body)
    assert "10253" not in caplog.text
    assert base64.b64encode(body[:24]).decode() not in caplog.text
    assert json.dumps(PURPLE[0, 0].tolist()) not in caplog.text
