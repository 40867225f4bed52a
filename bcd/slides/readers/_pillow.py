"""PNG and JPEG slides, decoded whole with Pillow.

These formats cannot be read by region, so the image is decoded once on open.
Pillow's decompression-bomb guard applies; gigapixel images belong in a tiled
TIFF (read by region, see :mod:`bcd.slides.readers._tiff`).

An RGB image stays in Pillow's memory: regions are cropped from it and the
thumbnail is shrunk by Pillow directly, so the picture is never copied whole
into numpy. Other modes (alpha, palette with transparency) are composited onto
white once, into a numpy array. When ``imagecodecs`` is installed (the
``slides`` extra) an 8-bit RGB PNG is decoded with it instead: inflated with
zlib-ng when the reader opens, then unfiltered on background threads
(:class:`~bcd.slides.readers._png_decode.ProgressivePng`), so the top rows can
be read (and scored) while the rest decodes; reads wait for their rows. Other
PNGs it decodes whole, about 1.5x faster than Pillow. Pillow still reads the
header first, so its decompression-bomb guard applies either way, and it
decodes (and explains) whatever ``imagecodecs`` refuses. The thumbnail of a
picture held in numpy is shrunk in horizontal parts on several threads.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image

from bcd.errors import InvalidInputError, PayloadTooLargeError
from bcd.slides.readers._array import as_rgb
from bcd.slides.readers._base import BaseSlideReader, _box_reduce, _resize
from bcd.slides.readers._checks import check_jpeg, check_png, read_head
from bcd.slides.readers._png_decode import SIGNATURE as PNG_SIGNATURE
from bcd.slides.readers._png_decode import ProgressivePng, parallel_map, worker_count

logger = logging.getLogger(__name__)

# A resolution is a plausible microscope scan only below this many µm/px;
# 72/96/300 dpi in screen images says nothing about magnification.
_MAX_PLAUSIBLE_MPP = 20.0


class PillowSlideReader(BaseSlideReader):
    """A PNG or JPEG image as a one-level slide.

    The microns per pixel come from the file's resolution (PNG ``pHYs``, JPEG
    ``dpi``) when it describes a microscope scan.

    Args:
        path: The image file.

    Raises:
        InvalidInputError: If the file is not a decodable image.
        PayloadTooLargeError: If it has more pixels than Pillow's bomb guard allows.
    """

    def __init__(self, path: str) -> None:
        from PIL import UnidentifiedImageError

        self.path = str(path)
        self._picture: Image.Image | None = None
        self._image = np.zeros((1, 1, 3), dtype=np.uint8)
        _check_header(self.path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                picture, image_format, info = _decode(self.path)
        except Image.DecompressionBombError as error:
            raise PayloadTooLargeError(
                f"{self.path} is too large to decode whole ({error}); save the slide as a "
                "tiled (pyramidal) TIFF, which is read region by region"
            ) from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise InvalidInputError(
                f"{self.path} could not be decoded as an image ({error}); "
                "check that the file is a complete PNG or JPEG"
            ) from error
        self.format = (image_format or "image").lower()
        self._mpp = _mpp_from_dpi(info.get("dpi"))
        self._progressive: ProgressivePng | None = None
        if isinstance(picture, ProgressivePng):
            self._progressive = picture
            self._image = picture.image
        elif isinstance(picture, np.ndarray):
            self._image = picture
        elif picture.mode == "RGB":
            self._picture = picture
        else:
            self._image = as_rgb(np.asarray(picture))
            picture.close()
        self._size = (
            self._picture.size
            if self._picture is not None
            else (self._image.shape[1], self._image.shape[0])
        )
        logger.debug("opened %s image %dx%d", self.format, *self._size)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return (self._size,)

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def rows_ready(self) -> int:
        if self._progressive is None:
            return self._size[1]
        return self._progressive.rows_ready

    def _wait(self, rows: int) -> None:
        if self._progressive is None:
            return
        try:
            self._progressive.wait(rows)
        except RuntimeError as error:
            raise InvalidInputError(
                f"{self.path} could not be decoded ({error}); check that the file is a complete PNG"
            ) from error

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if self._picture is not None:
            return np.asarray(self._picture.crop((x, y, x + width, y + height)))
        self._wait(y + height)
        return self._image[y : y + height, x : x + width]

    def _shrink(self, level: int, block: int, out_width: int, out_height: int) -> np.ndarray:
        if self._picture is None:
            self._wait(self._size[1])
            return _shrink_in_parallel(self._image, block, out_width, out_height)
        # The same reduce-then-box-resize as the banded numpy path, without the copies.
        reduced = self._picture.reduce(block) if block > 1 else self._picture
        if reduced.size != (out_width, out_height):
            reduced = reduced.resize((out_width, out_height), Image.Resampling.BOX)
        return np.asarray(reduced)

    def close(self) -> None:
        if self._picture is not None:
            self._picture.close()
            self._picture = None
        if self._progressive is not None:
            self._progressive.close()
            self._progressive = None
        self._image = np.zeros((1, 1, 3), dtype=np.uint8)


def _check_header(path: str) -> None:
    """Refuse a PNG or JPEG whose header declares an impossible size, before decoding."""
    head = read_head(path)
    size = os.path.getsize(path)
    if head.startswith(PNG_SIGNATURE):
        check_png(path, head, size)
    elif head.startswith(b"\xff\xd8"):
        check_jpeg(path, head, size)


def _shrink_in_parallel(
    image: np.ndarray, block: int, out_width: int, out_height: int
) -> np.ndarray:
    """``image`` box-averaged by ``block``, then resized: horizontal parts on several threads.

    Parts are whole multiples of the block, so reducing part by part equals
    reducing the whole picture at once (as the banded base-class path does).
    """
    if block == 1:
        return _resize(image, out_width, out_height)
    height = image.shape[0]
    rows = -(-height // worker_count() // block) * block
    parts = [image[top : top + rows] for top in range(0, height, rows)]
    reduced = parallel_map(lambda part: _box_reduce(part, block), parts)
    return _resize(
        reduced[0] if len(reduced) == 1 else np.concatenate(reduced), out_width, out_height
    )


def _decode(
    path: str,
) -> tuple[Image.Image | np.ndarray | ProgressivePng, str | None, dict[Any, Any]]:
    """Decode an image as RGB or RGBA; returns it with the file's format and info.

    The picture is a Pillow image, or with ``imagecodecs`` for an RGB PNG a
    uint8 ``(h, w, 3)`` array or a :class:`ProgressivePng` still decoding.
    """
    image = Image.open(path)
    image_format, info = image.format, dict(image.info)
    try:
        fast = _decode_rgb_png(path, image)
        if fast is not None:
            image.close()
            return fast, image_format, info
        image.load()
        picture = _rgb_or_rgba(image)
    except BaseException:
        image.close()
        raise
    if picture is not image:
        image.close()
    return picture, image_format, info


def _decode_rgb_png(path: str, image: Image.Image) -> np.ndarray | ProgressivePng | None:
    """An 8-bit RGB PNG decoded with ``imagecodecs``; ``None`` to leave it to Pillow.

    Rows are unfiltered in the background (:class:`ProgressivePng`) when the
    file allows, else the file is decoded whole by ``imagecodecs``. Pillow
    decides everything else: other formats and modes, transparency, and the
    error message for a damaged file (``imagecodecs`` errors fall back).
    """
    if image.format != "PNG" or image.mode != "RGB" or "transparency" in image.info:
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    with open(path, "rb") as handle:
        data = handle.read()
    expected = (image.size[1], image.size[0], 3)
    progressive = ProgressivePng.open(data, fallback=lambda: _decode_with_pillow(path))
    if progressive is not None:
        if progressive.image.shape == expected:
            return progressive
        progressive.close()
    try:
        pixels = imagecodecs.png_decode(data)
    except Exception as error:  # any codec failure: Pillow decodes and explains
        logger.debug("imagecodecs could not decode %s (%s); using Pillow", path, error)
        return None
    if pixels.dtype != np.uint8 or pixels.shape != expected:
        return None
    return np.asarray(pixels)


def _decode_with_pillow(path: str) -> np.ndarray:
    """An RGB picture decoded whole by Pillow, as a uint8 array."""
    with warnings.catch_warnings(), Image.open(path) as image:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return np.asarray(image.convert("RGB"))


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image has transparency (composited onto white later)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def _mpp_from_dpi(dpi: object) -> float | None:
    """Microns per pixel from a ``(x_dpi, y_dpi)`` pair, if it is a microscope resolution."""
    if not isinstance(dpi, tuple) or not dpi:
        return None
    try:
        x_dpi = float(dpi[0])
    except (TypeError, ValueError):
        return None
    if x_dpi <= 0:
        return None
    mpp = 25_400.0 / x_dpi
    return mpp if mpp < _MAX_PLAUSIBLE_MPP else None
