"""PNG and JPEG slides, decoded whole with Pillow.

These formats cannot be read by region, so the image is decoded once on open.
Pillow's decompression-bomb guard applies; gigapixel images belong in a tiled
TIFF (read by region, see :mod:`bcd.slides.readers._tiff`).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from PIL import Image

from bcd.errors import InvalidInputError, PayloadTooLargeError
from bcd.slides.readers._array import as_rgb
from bcd.slides.readers._base import BaseSlideReader

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
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(self.path) as image:
                    self.format = (image.format or "image").lower()
                    dpi = image.info.get("dpi")
                    image.load()
                    self._image = as_rgb(np.asarray(_rgb_or_rgba(image)))
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
        self._mpp = _mpp_from_dpi(dpi)
        self._size = (self._image.shape[1], self._image.shape[0])
        logger.debug("opened %s image %s", self.format, self._image.shape)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return (self._size,)

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._image[y : y + height, x : x + width]

    def close(self) -> None:
        self._image = np.zeros((1, 1, 3), dtype=np.uint8)


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
