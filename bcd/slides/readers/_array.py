"""In-memory slides: a numpy array (tests, synthetic slides, decoded images)."""

from __future__ import annotations

import numpy as np

from bcd.errors import InvalidInputError
from bcd.slides.readers._base import BaseSlideReader


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Coerce a decoded image to uint8 RGB ``(h, w, 3)``.

    Grey images are repeated over three channels; an alpha channel is
    composited onto white, since transparent means "no tissue".

    Raises:
        InvalidInputError: For shapes or dtypes that are not an image.
    """
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif image.dtype == bool:
            image = image.astype(np.uint8) * 255
        else:
            raise InvalidInputError(
                f"pixel type {image.dtype} is not supported; use 8-bit (or 16-bit) RGB"
            )
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InvalidInputError(
            f"image of shape {tuple(image.shape)} is not an RGB image; expected (height, width, 3)"
        )
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.uint16)
        rgb = image[:, :, :3].astype(np.uint16)
        return ((rgb * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8)
    return image


class ArraySlideReader(BaseSlideReader):
    """A slide held in memory as one level, or as a list of pyramid levels.

    Args:
        levels: One ``(h, w, 3)`` uint8 array, or a list of them, largest first.
        mpp: Microns per pixel at level 0, or ``None`` if unknown.

    Raises:
        InvalidInputError: If an array is not an RGB image or levels are not
            ordered largest first.
    """

    format = "array"

    def __init__(self, levels: np.ndarray | list[np.ndarray], mpp: float | None = None) -> None:
        arrays = [levels] if isinstance(levels, np.ndarray) else list(levels)
        if not arrays:
            raise InvalidInputError("an array slide needs at least one level")
        self._levels = [as_rgb(np.asarray(level)) for level in arrays]
        if 0 in self._levels[0].shape:
            raise InvalidInputError(
                f"an array slide needs at least one pixel a side, got shape {self._levels[0].shape}"
            )
        for larger, smaller in zip(self._levels, self._levels[1:], strict=False):
            if smaller.shape[0] > larger.shape[0] or smaller.shape[1] > larger.shape[1]:
                raise InvalidInputError("pyramid levels must be ordered largest first")
        if mpp is not None and mpp <= 0:
            raise InvalidInputError(f"mpp must be positive, got {mpp}")
        self._mpp = mpp

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((level.shape[1], level.shape[0]) for level in self._levels)

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._levels[level][y : y + height, x : x + width]
