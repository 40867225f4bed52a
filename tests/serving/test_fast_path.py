"""The lean ASGI path of the scoring routes answers exactly as FastAPI's routes do."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import bcd.serving._fast_path as fast_path
from bcd.config import Settings
from bcd.serving import InMemoryEndpointSource
from tests.serving.conftest import endpoint_spec, png_bytes

PALE = png_bytes(np.full((50, 50, 3), 235, np.uint8))
PURPLE = png_bytes(np.full((50, 50, 3), (110, 50, 140), np.uint8))
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "x-invoked-production-variant",
    "www-authenticate",
)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def huge_png_header() -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def multipart() -> tuple[bytes, str]:
    parts = b"".join(
        b'--fuzz\r\nContent-Disposition: form-data; name="files"; filename="p.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + data + b"\r\n"
        for data in (PALE, PURPLE)
    )
    return parts + b"--fuzz--\r\n", "multipart/form-data; boundary=fuzz"


IMAGE = {"Content-Type": "application/x-image"}
MULTIPART_BODY, MULTIPART_TYPE = multipart()
# (id, path, body, headers): good and bad requests of every kind.
REQUESTS: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("predict-json", "/predict-breast-cancer", PURPLE, IMAGE),
    ("predict-text", "/predict-breast-cancer", PALE, {**IMAGE, "Accept": "text/plain"}),
    ("predict-png-type", "/predict-breast-cancer", PALE, {"Content-Type": "image/png"}),
    ("predict-pinned", "/predict-breast-cancer", PALE, {**IMAGE, "X-Target-Variant": "main"}),
    ("predict-unknown-variant", "/predict-breast-cancer", PALE, {**IMAGE, "X-Target-Variant": "x"}),
    ("invoke", "/endpoints/ep/invocations", PURPLE, IMAGE),
    ("invoke-pinned", "/endpoints/ep/invocations", PURPLE, {**IMAGE, "X-Target-Variant": "main"}),
    ("invoke-tta", "/endpoints/ep/invocations?tta=true", PURPLE, IMAGE),
    ("invoke-tta-upper", "/endpoints/ep/invocations?tta=TRUE", PURPLE, IMAGE),
    ("invoke-tta-off", "/endpoints/ep/invocations?tta=0", PURPLE, IMAGE),
    ("invoke-tta-yes", "/endpoints/ep/invocations?tta=yes", PURPLE, IMAGE),
    ("invoke-other-query", "/endpoints/ep/invocations?x=1", PURPLE, IMAGE),
    ("bad-tta", "/endpoints/ep/invocations?tta=maybe", PURPLE, IMAGE),
    (
        "json-batch",
        "/endpoints/ep/invocations",
        json.dumps({"instances": [[[[235, 235, 235]] * 50] * 50] * 2}).encode(),
        {"Content-Type": "application/json"},
    ),
    (
        "npy-batch",
        "/endpoints/ep/invocations",
        npy(np.zeros((3, 50, 50, 3), np.uint8)),
        {"Content-Type": "application/x-npy"},
    ),
    ("multipart", "/endpoints/ep/invocations", MULTIPART_BODY, {"Content-Type": MULTIPART_TYPE}),
    ("unknown-variant", "/endpoints/ep/invocations", PURPLE, {**IMAGE, "X-Target-Variant": "no"}),
    ("unknown-endpoint", "/endpoints/missing/invocations", PURPLE, IMAGE),
    ("bad-image-unknown-endpoint", "/endpoints/missing/invocations", b"\x89PNG junk", IMAGE),
    (
        "bad-image-unknown-variant",
        "/endpoints/ep/invocations",
        b"junk",
        {**IMAGE, "X-Target-Variant": "no"},
    ),
    ("truncated-png", "/predict-breast-cancer", PURPLE[:40], IMAGE),
    ("empty-body", "/predict-breast-cancer", b"", IMAGE),
    ("huge-declared-png", "/predict-breast-cancer", huge_png_header(), IMAGE),
    ("wrong-type", "/predict-breast-cancer", b"a,b", {"Content-Type": "text/csv"}),
    ("no-type", "/predict-breast-cancer", PURPLE, {}),
    ("over-body-limit", "/predict-breast-cancer", b"x" * 5001, IMAGE),
    ("trailing-slash", "/predict-breast-cancer/", PURPLE, IMAGE),
]


@pytest.fixture
def pair(
    make_client: Callable[..., TestClient], serving_settings: Settings
) -> tuple[TestClient, TestClient]:
    """Two identical apps: one answers scoring on the lean path, one through FastAPI."""
    settings = serving_settings.model_copy(update={"max_body_bytes": 5000})
    lean, reference = make_client(settings), make_client(settings)
    reference.app.state.lean_scoring = False  # type: ignore[attr-defined]
    return lean, reference


def answer(response: Any) -> tuple[int, bytes, dict[str, str | None]]:
    return (
        response.status_code,
        response.content,
        {name: response.headers.get(name) for name in COMPARED_HEADERS},
    )


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the requests whose body the lean path read."""
    calls: list[int] = []
    original = fast_path.read_asgi_body

    async def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fast_path, "read_asgi_body", counting)
    return calls


@pytest.mark.parametrize(
    ("path", "body", "headers"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_lean_path_answers_like_fastapi(
    pair: tuple[TestClient, TestClient], path: str, body: bytes, headers: dict[str, str]
) -> None:
    lean, reference = pair
    expected = answer(reference.post(path, content=body, headers=headers))
    assert answer(lean.post(path, content=body, headers=headers)) == expected
    assert expected[0] != 500


def test_scoring_requests_take_the_lean_path_and_others_do_not(
    client: TestClient, lean_calls: list[int]
) -> None:
    assert client.post("/predict-breast-cancer", content=PALE, headers=IMAGE).status_code == 200
    assert client.post("/endpoints/ep/invocations?tta=1", content=PALE, headers=IMAGE).is_success
    assert len(lean_calls) == 2
    client.post("/endpoints/ep/invocations?tta=maybe", content=PALE, headers=IMAGE)
    client.post("/predict-breast-cancer/", content=PALE, headers=IMAGE)
    assert client.put("/predict-breast-cancer").status_code == 405
    assert len(lean_calls) == 2
    client.app.state.lean_scoring = False  # type: ignore[attr-defined]
    assert client.post("/predict-breast-cancer", content=PALE, headers=IMAGE).status_code == 200
    assert len(lean_calls) == 2


def test_lean_path_checks_keys_like_fastapi(
    make_client: Callable[..., TestClient],
    serving_settings: Settings,
    source: InMemoryEndpointSource,
) -> None:
    source.add_api_key("good-key")
    source.add_api_key("old-key")
    source.revoke_api_key("old-key")
    settings = serving_settings.model_copy(update={"require_api_key": True})
    lean, reference = make_client(settings), make_client(settings)
    reference.app.state.lean_scoring = False  # type: ignore[attr-defined]
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic good-key"},
        {"X-API-Key": "old-key"},
        {"X-API-Key": "good-key"},
        {"Authorization": "Bearer good-key"},
    ):
        sent = {**IMAGE, **headers}
        expected = answer(reference.post("/predict-breast-cancer", content=PALE, headers=sent))
        assert answer(lean.post("/predict-breast-cancer", content=PALE, headers=sent)) == expected
    assert expected[0] == 200
    assert lean.post("/predict-breast-cancer", content=PALE, headers=IMAGE).status_code == 401


def test_lean_path_counts_requests_by_route_template(client: TestClient) -> None:
    client.post("/endpoints/ep/invocations", content=PALE, headers=IMAGE)
    client.post("/endpoints/ep/invocations", content=b"junk", headers=IMAGE)
    client.post("/predict-breast-cancer", content=PALE, headers=IMAGE)
    text = client.get("/metrics").text
    route = 'route="/endpoints/{name}/invocations"'
    assert f'bcd_http_requests_total{{{route},status="200"}} 1.0' in text
    assert f'bcd_http_requests_total{{{route},status="400"}} 1.0' in text
    assert 'bcd_http_requests_total{route="/predict-breast-cancer",status="200"} 1.0' in text
    assert 'bcd_invocations_total{endpoint="ep",outcome="ok",variant="main"} 2.0' in text
    # A bad body is the client's fault, not a failed invocation of the variant.
    assert 'outcome="error"' not in text


def test_lean_path_turns_unexpected_errors_into_generic_500s(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app.state.service, "invoke", explode)  # type: ignore[attr-defined]
    response = client.post("/predict-breast-cancer", content=PALE, headers=IMAGE)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text and "secret internals" in caplog.text


def test_concurrent_requests_with_bad_images_fail_alone(
    make_client: Callable[..., TestClient], tiny_model: Any
) -> None:
    import concurrent.futures

    client = make_client(
        source=InMemoryEndpointSource([endpoint_spec("ep", [("main", tiny_model, 1.0)])])
    )
    bodies = [PALE, b"\x89PNG broken", PURPLE, PURPLE[:30]] * 8
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda body: (
                    client.post("/predict-breast-cancer", content=body, headers=IMAGE).status_code
                ),
                bodies,
            )
        )
    assert statuses == [200, 400, 200, 400] * 8


def test_slow_scoring_times_out_with_504_on_both_paths(
    make_client: Callable[..., TestClient], serving_settings: Settings
) -> None:
    import time

    settings = serving_settings.model_copy(update={"request_timeout_s": 0.1})
    for lean in (True, False):
        client = make_client(settings)
        client.app.state.lean_scoring = lean  # type: ignore[attr-defined]
        with client.app.state.router.use("ep") as loaded:  # type: ignore[attr-defined]
            batcher = loaded.variants["main"].runtime._batcher
        infer = batcher._infer

        def slow(replica: int, batch: np.ndarray, infer: Any = infer) -> np.ndarray:
            time.sleep(1.0)
            return infer(replica, batch)

        batcher._infer = slow
        started = time.monotonic()
        response = client.post("/predict-breast-cancer", content=PALE, headers=IMAGE)
        assert response.status_code == 504, lean
        assert response.json()["error"]["code"] == "timeout"
        assert time.monotonic() - started < 0.8  # answered before scoring finished
        text = client.get("/metrics").text
        assert 'bcd_invocations_total{endpoint="ep",outcome="error",variant="main"} 1.0' in text


def test_a_stalled_upload_times_out() -> None:
    import asyncio

    from bcd.errors import BcdTimeoutError
    from bcd.serving._security import read_body

    async def stalled() -> Any:
        yield b"\x89PNG"
        await asyncio.sleep(5)
        yield b"rest"

    settings = Settings(request_timeout_s=0.05)
    with pytest.raises(BcdTimeoutError, match="did not arrive within"):
        asyncio.run(read_body(stalled(), None, settings))


def test_with_cors_the_lean_path_still_answers_and_cors_headers_apply(
    make_client: Callable[..., TestClient], serving_settings: Settings, lean_calls: list[int]
) -> None:
    client = make_client(
        serving_settings.model_copy(update={"cors_origins": ["https://lab.example"]})
    )
    response = client.post(
        "/predict-breast-cancer", content=PALE, headers={**IMAGE, "Origin": "https://lab.example"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://lab.example"
    assert len(lean_calls) == 1
    text = client.get("/metrics").text
    assert 'bcd_http_requests_total{route="/predict-breast-cancer",status="200"} 1.0' in text


@pytest.mark.parametrize(
    ("model", "variant", "threshold"),
    [("m", "AllTraffic", 0.5), ('we"ird\\ näme', "v\u2028x", 0.3), ("a", "b", 1e-7)],
    ids=["plain", "escaped-names", "tiny-threshold"],
)
def test_single_image_answers_are_the_json_of_the_document(
    model: str, variant: str, threshold: float
) -> None:
    from bcd.serving import Invocation

    rng = np.random.default_rng(5)
    idc = [*rng.random(200), 0.0, 1.0, threshold, float(np.nextafter(threshold, 0)), 1e-300]
    for p1 in idc:
        invocation = Invocation("ep", model, variant, np.array([[1 - p1, p1]]), threshold)
        body, media = invocation.render(None)
        assert media == "application/json"
        assert body == json.dumps(invocation.document()).encode()
    with np.errstate(invalid="ignore"):
        broken = Invocation("ep", model, variant, np.array([[np.nan, np.nan]]), threshold)
    assert broken.render(None)[0] == json.dumps(broken.document()).encode()
