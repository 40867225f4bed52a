"""Request bodies → lists of RGB patches (``H×W×3`` uint8 arrays).

Every content type the API accepts is decoded here, for the REST routes and
the in-process client alike, so both refuse bad input the same way:

- ``application/x-image``, ``image/png``, ``image/jpeg``, ``image/tiff``: one
  image, raw bytes (any of PNG, JPEG, TIFF; the bytes decide, not the label);
- ``application/json``: ``{"instances": [H×W×3 arrays]}`` (numbers 0–255),
  ``{"image": "<base64>"}`` or ``{"images": ["<base64>", …]}``;
- ``multipart/form-data``: one image per file part;
- ``application/x-npy``: a ``H×W×3`` or ``N×H×W×3`` uint8 array (no pickles).

Memory is bounded per request: before any pixel is decoded, every image's
size is read from its header (PNG, JPEG and TIFF files) or its array shape
(JSON ``instances``, ``.npy`` batches) and counted against a budget of
decoded pixels per request (``Settings.max_request_pixels``), so no request
holds more than ``3 × max_request_pixels`` bytes of decoded images. Images are
then decoded one after another.

Bad input raises :class:`~bcd.errors.InvalidInputError` (400),
:class:`~bcd.errors.UnsupportedMediaTypeError` (415) or
:class:`~bcd.errors.PayloadTooLargeError` (413); nothing else escapes.
Messages never quote file names, which often hold patient identifiers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from bcd.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError

IMAGE_TYPES = frozenset({"application/x-image", "image/png", "image/jpeg", "image/tiff"})
SUPPORTED_TYPES = (
    *sorted(IMAGE_TYPES),
    "application/json",
    "multipart/form-data",
    "application/x-npy",
)
# A hard cap on images per request, whatever the body limit allows.
MAX_IMAGES_PER_REQUEST = 4096
# Decoded pixels per request unless told otherwise (Settings.max_request_pixels):
# four images of 4096×4096, 192 MiB of RGB.
DEFAULT_REQUEST_PIXELS = 4 * 4096 * 4096
_PILLOW_FORMATS = ("PNG", "JPEG", "TIFF")
_NPY_MAX_HEADER = 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a ``Content-Type`` header value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class _Encoded:
    """An image file still to decode, and how messages name it."""

    data: bytes
    what: str


# What a body holds before decoding: decoded arrays and image files.
_Item: TypeAlias = np.ndarray | _Encoded


def decode_request(
    content_type: str | None,
    body: bytes,
    *,
    max_image_pixels: int,
    max_request_pixels: int = DEFAULT_REQUEST_PIXELS,
) -> list[np.ndarray]:
    """Decode a request body into RGB patches.

    Args:
        content_type: The ``Content-Type`` header value (parameters allowed).
        body: The whole request body.
        max_image_pixels: Largest ``width × height`` accepted per image.
        max_request_pixels: Largest sum of ``width × height`` over the
            request's images, counted from headers and shapes before decoding.

    Returns:
        One ``H×W×3`` uint8 array per image, in request order (at least one).

    Raises:
        UnsupportedMediaTypeError: The content type is missing or not accepted.
        InvalidInputError: The body cannot be decoded, or an array has the wrong shape.
        PayloadTooLargeError: An image is over ``max_image_pixels``, the images
            together are over ``max_request_pixels``, or there are too many.
    """
    kind = media_type(content_type)
    items: list[_Item]
    if kind in IMAGE_TYPES:
        items = [_Encoded(body, "the image")]
    elif kind == "application/json":
        items = _decode_json(body, max_image_pixels, max_request_pixels)
    elif kind == "multipart/form-data":
        items = _decode_multipart(content_type or "", body)
    elif kind == "application/x-npy":
        items = _decode_npy(body, max_image_pixels, max_request_pixels)
    else:
        shown = kind or "none"
        raise UnsupportedMediaTypeError(
            f"content type {shown!r} is not accepted; send one of: {', '.join(SUPPORTED_TYPES)}"
        )
    if not items:
        raise InvalidInputError("the request holds no image")
    _check_count(len(items))
    total = 0
    for item in items:
        if isinstance(item, _Encoded):
            total += image_pixels(item.data, max_image_pixels, item.what)
        else:
            total += item.shape[0] * item.shape[1]
        _check_budget(total, max_request_pixels)
    return [
        decode_image(item.data, max_image_pixels, item.what) if isinstance(item, _Encoded) else item
        for item in items
    ]


def _check_count(count: int) -> None:
    if count > MAX_IMAGES_PER_REQUEST:
        raise PayloadTooLargeError(
            f"the request holds {count} images; the limit is {MAX_IMAGES_PER_REQUEST} "
            "per request, split it into several requests"
        )


def _check_budget(total: int, max_request_pixels: int) -> None:
    if total > max_request_pixels:
        raise PayloadTooLargeError(
            f"the request's images hold more than {max_request_pixels} pixels together "
            "(the per-request limit, BCD_MAX_REQUEST_PIXELS); send fewer or smaller "
            "images per request"
        )


def image_pixels(data: bytes, max_image_pixels: int, what: str = "the image") -> int:
    """``width × height`` of a PNG, JPEG or TIFF file, read from its header alone.

    Args:
        data: The file's bytes.
        max_image_pixels: Largest ``width × height`` accepted.
        what: How messages name the image.

    Returns:
        The declared pixel count (at most ``max_image_pixels``).

    Raises:
        InvalidInputError: The bytes are empty or the header is not a readable
            PNG, JPEG or TIFF header.
        PayloadTooLargeError: The header declares more than ``max_image_pixels``.
    """
    if not data:
        raise _empty(what)
    png = _png_size(data)
    if png is not None:
        width, height = png
    else:
        with _pillow_errors(what), _open_pillow(data) as image:
            width, height = image.size
    if width * height > max_image_pixels:
        raise _too_many_pixels(what, width, height, max_image_pixels)
    return width * height


def decode_image(data: bytes, max_image_pixels: int, what: str = "the image") -> np.ndarray:
    """Decode PNG, JPEG or TIFF bytes into an ``H×W×3`` uint8 array.

    The size in the header is checked before any pixel is decoded, so a
    decompression bomb costs nothing.

    Raises:
        InvalidInputError: The bytes are empty or not a readable PNG, JPEG or TIFF.
        PayloadTooLargeError: The image has more than ``max_image_pixels`` pixels.
    """
    if not data:
        raise _empty(what)
    pixels = _decode_rgb_png(data, max_image_pixels)
    if pixels is not None:
        return pixels
    with _pillow_errors(what), _open_pillow(data) as image:
        width, height = image.size
        if width * height > max_image_pixels:
            raise _too_many_pixels(what, width, height, max_image_pixels)
        # Most patches are RGB already: converting would only copy them.
        pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise InvalidInputError(f"{what} did not decode to RGB pixels")
    return pixels


def _empty(what: str) -> InvalidInputError:
    return InvalidInputError(f"{what} is empty; send the bytes of a PNG, JPEG or TIFF file")


@contextlib.contextmanager
def _open_pillow(data: bytes) -> Iterator[Any]:
    """The image opened lazily by Pillow (header read, no pixel decoded yet)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as image:
            yield image


@contextlib.contextmanager
def _pillow_errors(what: str) -> Iterator[None]:
    """Pillow's failures as ``InvalidInputError`` / ``PayloadTooLargeError``."""
    from PIL import Image

    try:
        yield
    except PayloadTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLargeError(f"{what} is too large to decode: {error}") from error
    except Exception as error:
        # Pillow raises many types for corrupt files (OSError, ValueError,
        # SyntaxError, struct.error, …); all mean the same to the caller.
        raise InvalidInputError(
            f"{what} could not be decoded as PNG, JPEG or TIFF ({type(error).__name__}); "
            "check that the file is a complete image"
        ) from error


def _png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR (the PNG spec puts it first), else ``None``."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _decode_rgb_png(data: bytes, max_image_pixels: int) -> np.ndarray | None:
    """An 8-bit, non-interlaced RGB PNG (what patches are) decoded by ``imagecodecs``.

    libpng through ``imagecodecs`` decodes a 50×50 patch in about 40% of
    Pillow's time, most of Pillow's being Python-level chunk parsing. The
    header is read here first, so only a PNG within ``max_image_pixels`` is
    decoded. Returns ``None`` to leave the image to Pillow: another format or
    kind of PNG, a size over the limit, any codec error (Pillow then decides
    and explains), or ``imagecodecs`` not installed.
    """
    # Signature, then IHDR first (the PNG spec requires it): length, type, fields.
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if depth != 8 or color != 2 or interlace != 0 or not 0 < width * height <= max_image_pixels:
        return None
    try:
        from imagecodecs import png_decode
    except ImportError:
        return None
    try:
        pixels = png_decode(data)
    except Exception:
        return None
    if pixels.shape != (height, width, 3) or pixels.dtype != np.uint8:
        return None
    return pixels


def _too_many_pixels(what: str, width: int, height: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{what} is {width}×{height} = {width * height} pixels; the limit is {limit}. "
        "Send patches, or tile whole slides with the slides route"
    )


def _decode_json(body: bytes, max_image_pixels: int, max_request_pixels: int) -> list[_Item]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InvalidInputError(f"the body is not valid JSON: {error}") from error
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidInputError('"instances" must be a list of H×W×3 arrays')
        _check_count(len(instances))
        items: list[_Item] = []
        total = 0
        for index, item in enumerate(instances):
            items.append(_instance(item, index, max_image_pixels))
            if isinstance(items[-1], np.ndarray):
                total += items[-1].shape[0] * items[-1].shape[1]
                _check_budget(total, max_request_pixels)
        return items
    if isinstance(document, dict) and "image" in document:
        return [_base64_image(document["image"], "the image")]
    if isinstance(document, dict) and "images" in document:
        files = document["images"]
        if not isinstance(files, list):
            raise InvalidInputError('"images" must be a list of base64-encoded image files')
        _check_count(len(files))
        return [_base64_image(item, f"image {index}") for index, item in enumerate(files)]
    raise InvalidInputError(
        'JSON bodies must be {"instances": [H×W×3 arrays]}, {"image": "<base64>"} '
        'or {"images": ["<base64>", …]}'
    )


def _base64_image(value: Any, what: str) -> _Encoded:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a base64 string of a PNG, JPEG or TIFF file")
    if value.startswith("data:"):
        # Data URLs (what browsers produce): data:image/png;base64,<payload>
        value = value.partition(",")[2]
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInputError(f"{what} is not valid base64: {error}") from error
    return _Encoded(data, what)


def _instance(item: Any, index: int, max_image_pixels: int) -> _Item:
    what = f"instance {index}"
    if isinstance(item, dict) and "b64" in item:
        return _base64_image(item["b64"], what)
    if not isinstance(item, list):
        raise InvalidInputError(f"{what} must be an H×W×3 array of numbers 0–255")
    try:
        array = np.asarray(item)
    except (ValueError, TypeError, RecursionError) as error:
        raise InvalidInputError(f"{what} is not a rectangular H×W×3 array") from error
    return _check_pixels(array, what, max_image_pixels)


def _check_pixels(array: np.ndarray, what: str, max_image_pixels: int) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise InvalidInputError(
            f"{what} has shape {array.shape}; each image must be H×W×3 (RGB, channels last)"
        )
    if array.shape[0] * array.shape[1] > max_image_pixels:
        raise _too_many_pixels(what, array.shape[1], array.shape[0], max_image_pixels)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iuf":
        raise InvalidInputError(f"{what} must hold numbers 0–255, not {array.dtype}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise InvalidInputError(f"{what} has values outside 0–255; send 8-bit RGB pixels")
    return np.rint(array).astype(np.uint8)


def _decode_npy(body: bytes, max_image_pixels: int, max_request_pixels: int) -> list[_Item]:
    # The header is read and checked by hand so that a header declaring a
    # huge shape never allocates memory, and pickled objects are never loaded.
    stream = io.BytesIO(body)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(stream, _NPY_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(stream, _NPY_MAX_HEADER)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as error:
        raise InvalidInputError(
            f"the body is not a .npy array ({error}); write it with numpy.save"
        ) from error
    if dtype != np.uint8:
        raise InvalidInputError(f"the .npy array has dtype {dtype}; send uint8 pixels (0–255)")
    if len(shape) not in (3, 4) or shape[-1] != 3 or 0 in shape:
        raise InvalidInputError(
            f"the .npy array has shape {shape}; send H×W×3 or N×H×W×3 (RGB, channels last)"
        )
    count = int(np.prod(shape, dtype=np.int64))
    data = body[stream.tell() :]
    if len(data) != count:
        raise InvalidInputError(
            f"the .npy array declares shape {shape} ({count} bytes) but holds {len(data)} bytes"
        )
    images, height, width = (1, *shape[:2]) if len(shape) == 3 else shape[:3]
    _check_count(images)
    _check_budget(images * height * width, max_request_pixels)
    array = np.frombuffer(data, dtype=np.uint8).reshape(shape, order="F" if fortran_order else "C")
    batch = array[np.newaxis] if array.ndim == 3 else array
    return [
        _check_pixels(image, f"image {index}", max_image_pixels)
        for index, image in enumerate(batch)
    ]


def _decode_multipart(content_type: str, body: bytes) -> list[_Item]:
    from python_multipart.multipart import parse_options_header

    from bcd.serving._multipart import MultipartStream, boundary_of

    parts: list[dict[str, Any]] = []
    header: dict[str, bytes] = {}

    def on_part_begin() -> None:
        parts.append({"headers": {}, "data": []})
        if len(parts) > MAX_IMAGES_PER_REQUEST:
            raise PayloadTooLargeError(
                f"the multipart form has more than {MAX_IMAGES_PER_REQUEST} parts, the limit "
                "of images per request; split it into several requests"
            )

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] = header.get("field", b"") + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] = header.get("value", b"") + data[start:end]

    def on_header_end() -> None:
        name = header.pop("field", b"").decode("latin-1").lower()
        parts[-1]["headers"][name] = header.pop("value", b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].append(data[start:end])

    stream = MultipartStream(
        boundary_of(content_type),
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    stream.write(body)
    stream.finish()
    files: list[_Item] = []
    for index, part in enumerate(parts):
        _, disposition = parse_options_header(part["headers"].get("content-disposition"))
        part_type = media_type(part["headers"].get("content-type", b"").decode("latin-1"))
        if b"filename" not in disposition and part_type not in IMAGE_TYPES:
            continue  # a plain form field, not a file
        files.append(_Encoded(b"".join(part["data"]), f"file part {index}"))
    if not files:
        raise InvalidInputError("the multipart form holds no file parts; attach image files")
    return files
