"""The reader contract every slide format implements."""

from __future__ import annotations

import abc
import math
from types import TracebackType

import numpy as np

#: Background colour used outside the image and for transparent pixels (white glass).
BACKGROUND = 255
# Thumbnails are shrunk from bands of about this many pixels, to bound memory.
_THUMBNAIL_BAND_PIXELS = 8_000_000


class BaseSlideReader(abc.ABC):
    """A slide or image region, readable by rectangle at any pyramid level.

    Level 0 is the full resolution; level ``i`` is ``level_downsamples[i]``
    times smaller. Coordinates passed to :meth:`read_region` are pixels *of
    that level*. Regions may extend past the image: the outside reads as white
    background, so edge tiles need no special case.

    Readers are not thread-safe; give each thread its own reader.

    Attributes:
        path: Where the slide came from (``None`` for in-memory readers).
        format: Short format name (``"array"``, ``"png"``, ``"tiff"``, ``"openslide"`` …).
    """

    path: str | None = None
    format: str = "unknown"

    @property
    @abc.abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every level, level 0 first."""

    @property
    @abc.abstractmethod
    def mpp(self) -> float | None:
        """Microns per pixel at level 0, or ``None`` when the file does not say."""

    @abc.abstractmethod
    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Read a rectangle fully inside level ``level``; returns uint8 ``(height, width, 3)``."""

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels (1 for a flat image)."""
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level relative to level 0."""
        width0, height0 = self.dimensions
        return tuple(
            ((width0 / width) + (height0 / height)) / 2 for width, height in self.level_dimensions
        )

    def rows_ready(self) -> int:
        """Level-0 rows, from the top, readable now without waiting.

        Readers that decode in the background (a PNG unfiltered on other
        threads) report their progress here, so tiles near the top can be
        scored while the rest decodes; such readers are safe to read from
        several threads. Others are readable at once: the full height.
        """
        return self.dimensions[1]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """Read a rectangle of level ``level``.

        Args:
            x: Left edge, in pixels of that level (may be negative).
            y: Top edge, in pixels of that level (may be negative).
            width: Width in pixels (> 0).
            height: Height in pixels (> 0).
            level: Pyramid level, 0 = full resolution.

        Returns:
            uint8 array ``(height, width, 3)``, RGB; outside the image is white.

        Raises:
            InvalidInputError: For a bad level or an empty rectangle, or when
                the file cannot be decoded at that place.
        """
        from bcd.errors import InvalidInputError

        if not 0 <= level < self.level_count:
            raise InvalidInputError(
                f"level {level} does not exist; this slide has levels 0..{self.level_count - 1}"
            )
        if width <= 0 or height <= 0:
            raise InvalidInputError(f"region {width}x{height} is empty; give a positive size")
        level_width, level_height = self.level_dimensions[level]
        left, top = max(x, 0), max(y, 0)
        right, bottom = min(x + width, level_width), min(y + height, level_height)
        if left == x and top == y and right == x + width and bottom == y + height:
            return self._read(level, x, y, width, height)
        region = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        if right > left and bottom > top:
            inside = self._read(level, left, top, right - left, bottom - top)
            region[top - y : bottom - y, left - x : right - x] = inside
        return region

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (level 0 if none)."""
        best = 0
        for level, factor in enumerate(self.level_downsamples):
            if factor <= downsample * 1.001 and factor >= self.level_downsamples[best]:
                best = level
        return best

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        """A downscaled RGB image of the whole slide.

        Reads the coarsest level that is still at least as large as needed, in
        horizontal bands (memory stays bounded for flat giant images), and
        shrinks it by box averaging.

        Args:
            max_size: Longest side of the thumbnail in pixels.

        Returns:
            ``(image, downsample)``: uint8 ``(h, w, 3)`` and the level-0 pixels
            per thumbnail pixel.
        """
        width0, height0 = self.dimensions
        downsample = max(1.0, max(width0, height0) / max_size)
        level = self.best_level_for_downsample(downsample)
        factor = downsample / self.level_downsamples[level]
        out_width = max(1, round(width0 / downsample))
        out_height = max(1, round(height0 / downsample))
        block = max(1, math.floor(factor)) if factor > 1.0001 else 1
        return self._shrink(level, block, out_width, out_height), width0 / out_width

    def _shrink(self, level: int, block: int, out_width: int, out_height: int) -> np.ndarray:
        """Level ``level`` box-averaged by ``block``, then resized (box filter) to the output.

        Reads in horizontal bands of ~8 Mpx so memory stays bounded for flat
        giant images. Readers that hold a decoded picture override this.
        """
        level_width, level_height = self.level_dimensions[level]
        # Bands are whole multiples of the block, so reducing band by band equals
        # reducing the whole level at once.
        rows_per_band = max(block, (_THUMBNAIL_BAND_PIXELS // max(level_width, 1)) // block * block)
        pieces = []
        for top in range(0, level_height, rows_per_band):
            height = min(rows_per_band, level_height - top)
            band = self.read_region(0, top, level_width, height, level)
            pieces.append(_box_reduce(band, block))
        reduced = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)
        return _resize(reduced, out_width, out_height)

    def close(self) -> None:  # noqa: B027 - optional hook, most readers hold nothing
        """Release the file handle (readers are also context managers)."""

    def __enter__(self) -> BaseSlideReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.dimensions
        return f"{type(self).__name__}({self.format}, {width}x{height}, levels={self.level_count})"


def _box_reduce(image: np.ndarray, block: int) -> np.ndarray:
    """Average ``block``x``block`` pixel blocks (Pillow's C ``reduce``; edges averaged partly)."""
    if block == 1:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(block))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    from PIL import Image

    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BOX)
    return np.asarray(resized)
