"""Fuzzing the scoring routes: bad input of every kind is a 4xx, never a 500."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.serving.conftest import png_bytes

rng = np.random.default_rng(20240611)
CONTENT_TYPES = [
    "application/x-image",
    "image/png",
    "image/jpeg",
    "image/tiff",
    "application/json",
    "application/x-npy",
    "multipart/form-data; boundary=fuzz",
]
REFUSALS = {400, 413, 415}


def png_with_header(width: int, height: int, payload: bytes = b"") -> bytes:
    """A PNG signature and IHDR declaring ``width × height``, then ``payload``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + payload
    )


def random_json(depth: int = 0) -> object:
    choice = rng.integers(0, 7 if depth < 4 else 4)
    if choice == 0:
        return int(rng.integers(-1000, 1000))
    if choice == 1:
        return float(rng.standard_normal() * 1e6)
    if choice == 2:
        return "".join(chr(int(c)) for c in rng.integers(32, 0x3000, size=int(rng.integers(0, 20))))
    if choice == 3:
        return None
    if choice == 4:
        return [random_json(depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if choice == 5:
        keys = ["instances", "image", "images", "b64", "x"]
        return {
            str(rng.choice(keys)): random_json(depth + 1) for _ in range(int(rng.integers(1, 3)))
        }
    return [[[random_json(depth + 3) for _ in range(3)]]]


@pytest.fixture(params=[True, False], ids=["lean-path", "fastapi-path"])
def client(make_client: Callable[..., TestClient], request: pytest.FixtureRequest) -> TestClient:
    """Both ways a scoring request is answered: the lean ASGI path and FastAPI's routes."""
    client = make_client()
    client.app.state.lean_scoring = request.param  # type: ignore[attr-defined]
    return client


def assert_refused(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code in REFUSALS, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["message"]


def post(client: TestClient, body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/endpoints/ep/invocations", content=body, headers={"Content-Type": content_type}
    )


def test_random_bytes_under_every_content_type(client: TestClient) -> None:
    for _ in range(40):
        body = rng.bytes(int(rng.integers(0, 3000)))
        for content_type in CONTENT_TYPES:
            assert_refused(post(client, body, content_type))


def test_truncated_and_corrupted_pngs(client: TestClient, idc_png: bytes) -> None:
    for cut in sorted(set(rng.integers(1, len(idc_png) - 1, size=40).tolist())):
        assert_refused(post(client, idc_png[:cut], "image/png"))
    for _ in range(40):
        corrupted = bytearray(idc_png)
        for position in rng.integers(8, len(corrupted), size=int(rng.integers(1, 20))):
            corrupted[position] = int(rng.integers(0, 256))
        response = post(client, bytes(corrupted), "image/png")
        # A flipped byte can land in ancillary data and leave a valid image.
        assert response.status_code == 200 or response.status_code in REFUSALS, response.text


@pytest.mark.parametrize(
    "width,height,status",
    [
        (100_000, 100_000, 413),
        (2**31 - 1, 2**31 - 1, 413),
        (0, 0, 400),
        (50, 50, 400),
        (4096, 4097, 413),
    ],
)
def test_declared_dimensions_without_pixels(
    client: TestClient, width: int, height: int, status: int
) -> None:
    response = post(client, png_with_header(width, height, b"\x00\x00\x00\x00IDAT"), "image/png")
    assert response.status_code == status, response.text


def test_random_json_shapes(client: TestClient) -> None:
    for _ in range(150):
        document = random_json()
        response = post(client, json.dumps(document).encode(), "application/json")
        assert_refused(response)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"instances": [[[[1e400, 0, 0]]]]}',
        b'{"instances": [[[[NaN, 0, 0]]]]}',
        b'{"instances": [[[[true, false, true]]]]}',
        b'{"instances": [[[[1, 2, 3]]], "x"]}',
        b'{"instances": {"a": 1}}',
        b'{"images": [null]}',
        b'{"image": "' + b"A" * 1001 + b'"}',
        b"\xff\xfe{}",
        b"null",
    ],
    ids=lambda body: repr(body[:24]),
)
def test_nasty_json(client: TestClient, body: bytes) -> None:
    assert_refused(post(client, body, "application/json"))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((50, 50, 3), np.int64),
        np.zeros((50, 50, 3), np.float64),
        np.zeros((50, 50, 3), np.bool_),
        np.zeros((50, 50, 3), "<U1"),
        np.zeros((50, 50, 3), [("a", np.uint8)]),
        np.zeros((50, 50), np.uint8),
        np.zeros((50,), np.uint8),
        np.zeros((), np.uint8),
        np.zeros((0, 50, 50, 3), np.uint8),
        np.zeros((2, 50, 50, 1), np.uint8),
        np.zeros((1, 1, 50, 50, 3), np.uint8),
    ],
    ids=lambda array: f"{array.dtype}-{array.shape}",
)
def test_wrong_npy_dtypes_and_shapes(client: TestClient, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    assert_refused(post(client, buffer.getvalue(), "application/x-npy"))


def test_npy_with_truncated_or_padded_data(client: TestClient) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 50, 50, 3), np.uint8))
    data = buffer.getvalue()
    for body in (data[:-1], data + b"\x00", data[:20]):
        assert_refused(post(client, body, "application/x-npy"))


def test_multipart_edge_cases(client: TestClient) -> None:
    good = png_bytes(np.full((50, 50, 3), 200, np.uint8))
    cases = [
        (
            b'--fuzz\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n' + good,
            "unterminated",
        ),
        (b"--fuzz\r\n\r\n\r\n--fuzz--\r\n", "no headers"),
        (
            b'--fuzz\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
            b"\r\n--fuzz--\r\n",
            "empty file",
        ),
        (b"--other\r\n\r\nx\r\n--other--\r\n", "wrong boundary"),
    ]
    for body, _label in cases:
        assert_refused(post(client, body, "multipart/form-data; boundary=fuzz"))
    assert_refused(post(client, b"x", "multipart/form-data; boundary=" + "b" * 200))
