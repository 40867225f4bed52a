"""Request decoding: every accepted content type, and clear refusals."""

from __future__ import annotations

import base64
import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from bcd.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError
from bcd.serving import decode_request
from bcd.serving._decode import MAX_IMAGES_PER_REQUEST
from tests.serving.conftest import png_bytes

LIMIT = 4096 * 4096
rng = np.random.default_rng(7)
PATCH = rng.integers(0, 256, size=(50, 50, 3), dtype=np.uint8)


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def multipart(files: list[bytes], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = "xYzBoundary123"
    chunks = []
    for name, value in (fields or {}).items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        chunks.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    for index, data in enumerate(files):
        chunks.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="p{index}.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "content_type", ["application/x-image", "image/png", "IMAGE/PNG; charset=binary"]
)
def test_raw_png_decodes_exactly(content_type: str) -> None:
    (image,) = decode_request(content_type, png_bytes(PATCH), max_image_pixels=LIMIT)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, PATCH)


def test_tiff_is_lossless() -> None:
    (image,) = decode_request("image/tiff", encode(PATCH, "TIFF"), max_image_pixels=LIMIT)
    np.testing.assert_array_equal(image, PATCH)


def test_jpeg_decodes_close_to_the_original() -> None:
    ramp = np.linspace(40, 220, 50, dtype=np.float32)
    smooth = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128.0), -1)
    smooth = smooth.astype(np.uint8)  # (50, 50, 3), JPEG-friendly
    (image,) = decode_request("image/jpeg", encode(smooth, "JPEG"), max_image_pixels=LIMIT)
    assert image.shape == (50, 50, 3)
    assert np.abs(image.astype(int) - smooth.astype(int)).mean() < 4


def test_grey_and_rgba_become_rgb() -> None:
    grey = Image.fromarray(PATCH[..., 0])
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    (image,) = decode_request("image/png", buffer.getvalue(), max_image_pixels=LIMIT)
    assert image.shape == (50, 50, 3)
    np.testing.assert_array_equal(image[..., 1], PATCH[..., 0])
    rgba = np.dstack([PATCH, np.full((50, 50), 255, np.uint8)])
    (image,) = decode_request("image/png", png_bytes(rgba), max_image_pixels=LIMIT)
    np.testing.assert_array_equal(image, PATCH)


def test_json_instances_and_base64() -> None:
    body = json.dumps({"instances": [PATCH.tolist(), (PATCH // 2).tolist()]}).encode()
    images = decode_request("application/json", body, max_image_pixels=LIMIT)
    assert len(images) == 2
    np.testing.assert_array_equal(images[1], PATCH // 2)

    encoded = base64.b64encode(png_bytes(PATCH)).decode()
    (image,) = decode_request(
        "application/json", json.dumps({"image": encoded}).encode(), max_image_pixels=LIMIT
    )
    np.testing.assert_array_equal(image, PATCH)
    data_url = "data:image/png;base64," + encoded
    images = decode_request(
        "application/json",
        json.dumps({"images": [encoded, data_url]}).encode(),
        max_image_pixels=LIMIT,
    )
    assert len(images) == 2


def test_json_float_pixels_are_rounded() -> None:
    body = json.dumps({"instances": [[[[0.4, 254.6, 100.0]]]]}).encode()
    (image,) = decode_request("application/json", body, max_image_pixels=LIMIT)
    assert image.tolist() == [[[0, 255, 100]]]


def test_npy_single_and_batch() -> None:
    (image,) = decode_request("application/x-npy", npy(PATCH), max_image_pixels=LIMIT)
    np.testing.assert_array_equal(image, PATCH)
    batch = np.stack([PATCH, PATCH[::-1]])
    images = decode_request("application/x-npy", npy(batch), max_image_pixels=LIMIT)
    np.testing.assert_array_equal(images[1], PATCH[::-1])
    fortran = np.asfortranarray(PATCH)
    (image,) = decode_request("application/x-npy", npy(fortran), max_image_pixels=LIMIT)
    np.testing.assert_array_equal(image, PATCH)


def test_multipart_many_files_skips_plain_fields() -> None:
    body, content_type = multipart([png_bytes(PATCH), png_bytes(PATCH[:, ::-1])], {"note": "x"})
    images = decode_request(content_type, body, max_image_pixels=LIMIT)
    assert len(images) == 2
    np.testing.assert_array_equal(images[1], PATCH[:, ::-1])


@pytest.mark.parametrize(
    "content_type,body,error,match",
    [
        (None, b"x", UnsupportedMediaTypeError, "none"),
        ("text/csv", b"x", UnsupportedMediaTypeError, "text/csv"),
        ("image/png", b"", InvalidInputError, "empty"),
        ("image/png", b"not an image", InvalidInputError, "could not be decoded"),
        ("application/json", b"{", InvalidInputError, "not valid JSON"),
        ("application/json", b'{"pixels": []}', InvalidInputError, "instances"),
        ("application/json", b'{"instances": []}', InvalidInputError, "no image"),
        ("application/json", b'{"instances": [[[1, 2]]]}', InvalidInputError, "H×W×3"),
        ("application/json", b'{"instances":[[[[1,2,3]],[[1]]]]}', InvalidInputError, "not a rect"),
        ("application/json", b'{"instances": [[[[1, 2, 300]]]]}', InvalidInputError, "0–255"),
        ("application/json", b'{"instances": [[[["a", "b", "c"]]]]}', InvalidInputError, "numbers"),
        ("application/json", b'{"image": "@@@"}', InvalidInputError, "base64"),
        ("application/json", b'{"image": 5}', InvalidInputError, "base64"),
        ("application/json", b'{"images": "abc"}', InvalidInputError, "list"),
        ("application/x-npy", b"\x93NUMPY garbage", InvalidInputError, ".npy"),
        ("multipart/form-data", b"--x--", InvalidInputError, "boundary"),
        ("multipart/form-data; boundary=abc", b"--abc--\r\n", InvalidInputError, "no file"),
    ],
    ids=[
        "no-type", "csv", "empty", "garbage", "bad-json", "no-key", "zero-instances",
        "two-channels", "ragged", "over-255", "strings", "bad-base64", "base64-not-str",
        "images-not-list", "bad-npy", "no-boundary", "no-files",
    ],
)  # fmt: skip
def test_bad_bodies_are_refused_clearly(
    content_type: str | None, body: bytes, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode_request(content_type, body, max_image_pixels=LIMIT)


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((50, 50, 3), np.float32), "dtype float32"),
        (np.zeros((50, 50), np.uint8), "shape"),
        (np.zeros((2, 50, 50, 4), np.uint8), "shape"),
        (np.zeros((1, 2, 50, 50, 3), np.uint8), "shape"),
        (np.array([{"a": 1}], dtype=object), "dtype object"),
    ],
    ids=["float", "2d", "4-channels", "5d", "pickle"],
)
def test_npy_wrong_dtype_or_shape(array: np.ndarray, match: str) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    with pytest.raises(InvalidInputError, match=match):
        decode_request("application/x-npy", buffer.getvalue(), max_image_pixels=LIMIT)


def test_npy_header_declaring_a_huge_array_allocates_nothing() -> None:
    header = np.lib.format.header_data_from_array_1_0(PATCH)
    header["shape"] = (10**6, 5000, 5000, 3)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(PATCH.tobytes())
    with pytest.raises(InvalidInputError, match="declares shape"):
        decode_request("application/x-npy", buffer.getvalue(), max_image_pixels=LIMIT)


def test_pixel_limit_is_checked_before_decoding() -> None:
    big = np.zeros((200, 300, 3), np.uint8)
    with pytest.raises(PayloadTooLargeError, match="200 = 60000 pixels"):
        decode_request("image/png", png_bytes(big), max_image_pixels=50_000)
    with pytest.raises(PayloadTooLargeError):
        decode_request("application/x-npy", npy(big), max_image_pixels=50_000)
    body = json.dumps({"instances": [big.tolist()]}).encode()
    with pytest.raises(PayloadTooLargeError):
        decode_request("application/json", body, max_image_pixels=50_000)


def test_too_many_images_in_one_request() -> None:
    batch = np.zeros((MAX_IMAGES_PER_REQUEST + 1, 1, 1, 3), np.uint8)
    with pytest.raises(PayloadTooLargeError, match="limit is"):
        decode_request("application/x-npy", npy(batch), max_image_pixels=LIMIT)


def test_messages_never_quote_file_names() -> None:
    body, content_type = multipart([b"broken"])
    with pytest.raises(InvalidInputError) as caught:
        decode_request(
            content_type, body.replace(b"p0.png", b"10253_idx5_x1.png"), max_image_pixels=LIMIT
        )
    assert "10253" not in str(caught.value)
    assert "file part 0" in str(caught.value)


def _png(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize(
    "data",
    [
        _png(PATCH),
        _png(PATCH[:37, :23]),  # a slide-edge patch
        _png(PATCH, optimize=True),
        _png(np.full((50, 50, 3), 255, np.uint8), compress_level=0),
    ],
    ids=["patch", "edge-patch", "optimized", "stored"],
)
def test_rgb_pngs_take_the_fast_decoder_and_match_pillow(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _pillow(data)

    def no_pillow(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Pillow was used for an 8-bit RGB PNG")

    monkeypatch.setattr(Image, "open", no_pillow)
    np.testing.assert_array_equal(
        decode_request("image/png", data, max_image_pixels=LIMIT)[0], expected
    )


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(PATCH).convert("P"),
        Image.fromarray(PATCH).convert("L"),
        Image.fromarray(PATCH).convert("RGBA"),
        Image.new("I;16", (9, 7), 40000),
    ],
    ids=["palette", "grey", "rgba", "16-bit"],
)
def test_other_pngs_are_left_to_pillow(image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    (pixels,) = decode_request("image/png", data, max_image_pixels=LIMIT)
    np.testing.assert_array_equal(pixels, _pillow(data))


def test_interlaced_and_damaged_pngs_fall_back_to_pillow() -> None:
    import imagecodecs

    interlaced = _png(PATCH)  # Pillow cannot write Adam7: flip the header's flag by hand
    header = bytearray(interlaced)
    header[28] = 1
    crc = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    header[29:33] = crc
    with pytest.raises(InvalidInputError, match="could not be decoded"):
        decode_request("image/png", bytes(header), max_image_pixels=LIMIT)
    damaged = bytearray(_png(PATCH))
    damaged[60] ^= 0xFF  # inside IDAT: its CRC no longer matches
    with pytest.raises(imagecodecs.PngError):
        imagecodecs.png_decode(bytes(damaged))
    with pytest.raises(InvalidInputError, match="could not be decoded"):
        decode_request("image/png", bytes(damaged), max_image_pixels=LIMIT)
    with pytest.raises(PayloadTooLargeError, match="pixels"):
        decode_request("image/png", _png(PATCH), max_image_pixels=49 * 50)


def flat_png(width: int, height: int, colour: bytes = b"\xc8\x64\x96") -> bytes:
    """A one-colour RGB PNG, encoded row by row (no ``width × height`` array in memory)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + colour * width
    pixel_data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixel_data)
        + chunk(b"IEND", b"")
    )  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        b"hello, no boundary anywhere in this body",
        b'--xYzBoundary123\r\nContent-Disp\x00osition: form-data; name="f"; filename="a"\r\n\r\n'
        b"data\r\n--xYzBoundary123--\r\n",
        b'--xYzBoundary123\r\nContent-Disposition: form\x00data; name="f"; filename="a"\r\n\r\n'
        b"data\r\n--xYzBoundary123--\r\n",
        b'--xYzBoundary123\nContent-Disposition: form-data; name="f"; filename="a"\n\n'
        b"data\n--xYzBoundary123--\n",
        b'--xYzBoundary123\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\ndata',
    ],
    ids=[
        "no-boundary-in-body",
        "nul-in-header-name",
        "nul-in-header-value",
        "lf-only",
        "truncated",
    ],
)
def test_malformed_multipart_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInputError, match="multipart"):
        decode_request("multipart/form-data; boundary=xYzBoundary123", body, max_image_pixels=LIMIT)


@pytest.mark.parametrize("length", [71, 300, 5000])
def test_overlong_boundary_is_invalid_input(length: int) -> None:
    with pytest.raises(InvalidInputError, match=f"boundary is {length} characters"):
        decode_request(
            "multipart/form-data; boundary=" + "B" * length, b"x", max_image_pixels=LIMIT
        )


def test_request_pixel_budget_is_checked_from_headers_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bcd.serving._decode as decode_module

    big = flat_png(4096, 4096)
    assert len(big) < 60_000  # small files that decode to 48 MiB each
    body, content_type = multipart([big] * 5)

    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(decode_module, "decode_image", no_decoding)
    with pytest.raises(PayloadTooLargeError, match="BCD_MAX_REQUEST_PIXELS"):
        decode_request(content_type, body, max_image_pixels=LIMIT)
    encoded = base64.b64encode(big).decode()
    for document in ({"images": [encoded] * 5}, {"instances": [{"b64": encoded}] * 5}):
        with pytest.raises(PayloadTooLargeError, match="BCD_MAX_REQUEST_PIXELS"):
            decode_request(
                "application/json", json.dumps(document).encode(), max_image_pixels=LIMIT
            )


@pytest.mark.parametrize("kind", ["multipart", "instances", "npy", "base64"])
def test_request_pixel_budget_counts_every_body_kind(kind: str) -> None:
    patches = [PATCH, PATCH[::-1], PATCH[:, ::-1]]  # 3 × 2,500 pixels
    if kind == "multipart":
        body, content_type = multipart([png_bytes(patch) for patch in patches])
    elif kind == "instances":
        body = json.dumps({"instances": [patch.tolist() for patch in patches]}).encode()
        content_type = "application/json"
    elif kind == "npy":
        body, content_type = npy(np.stack(patches)), "application/x-npy"
    else:
        files = [base64.b64encode(png_bytes(patch)).decode() for patch in patches]
        body, content_type = json.dumps({"images": files}).encode(), "application/json"
    images = decode_request(content_type, body, max_image_pixels=LIMIT, max_request_pixels=7_500)
    np.testing.assert_array_equal(images[2], patches[2])
    with pytest.raises(PayloadTooLargeError, match="more than 7499 pixels"):
        decode_request(content_type, body, max_image_pixels=LIMIT, max_request_pixels=7_499)


_RSS_PROBE = """
import json, resource, sys
from bcd.errors import PayloadTooLargeError
from bcd.serving import decode_request
from tests.serving.test_decode import flat_png, multipart

count = int(sys.argv[1])
body, content_type = multipart([flat_png(4096, 4096, bytes([i, 100, 150])) for i in range(count)])
warm_body, warm_type = multipart([flat_png(64, 64)])  # imports the decoders first
decode_request(warm_type, warm_body, max_image_pixels=4096 * 4096)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    images = decode_request(content_type, body, max_image_pixels=4096 * 4096)
    outcome = f"decoded {len(images)}"
except PayloadTooLargeError:
    outcome = "refused"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"body": len(body), "outcome": outcome, "grown_mib": (after - before) / 1024}))
"""


@pytest.mark.parametrize(
    "count,outcome,most_mib",
    [(40, "refused", 48), (4, "decoded 4", 4 * 48 + 64)],
    ids=["over-budget", "at-budget"],
)
def test_peak_memory_of_a_request_is_bounded(count: int, outcome: str, most_mib: int) -> None:
    """Peak RSS of decoding many small files that each decode to 4096×4096 (48 MiB)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(count)],
        capture_output=True, text=True, timeout=120, cwd=root, check=True,
    )  # fmt: skip
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["outcome"] == outcome
    assert measured["body"] < 6 * 1024**2  # within the default body limit
    assert measured["grown_mib"] < most_mib, measured
