"""Big TIFF slides read by region with tifffile, never decoded whole.

Tiled and stripped pages are decoded one segment (tile or strip) at a time,
with a small LRU cache so neighbouring regions reuse decoded segments.
Uncompressed contiguous pages are memory-mapped. Pyramids stored as SubIFDs
or as extra pages of the first series (Aperio/OME style) become levels.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from typing import Any

import numpy as np

from bcd.errors import InvalidInputError
from bcd.slides.readers._array import as_rgb
from bcd.slides.readers._base import BaseSlideReader
from bcd.slides.readers._checks import check_tiff_page

logger = logging.getLogger(__name__)

_RESOLUTION_UNIT_MICRONS = {2: 25_400.0, 3: 10_000.0}  # inch, centimetre
_APERIO_MPP = re.compile(r"MPP\s*=\s*([0-9.]+)")
_CACHE_BYTES = 128 * 1024**2


class TiffSlideReader(BaseSlideReader):
    """A (Big)TIFF slide, optionally pyramidal, read region by region.

    Args:
        path: The TIFF file.
        cache_bytes: Most bytes of decoded segments kept per level.

    Raises:
        InvalidInputError: If the file is not a readable RGB/grey TIFF.
    """

    format = "tiff"

    def __init__(self, path: str, cache_bytes: int = _CACHE_BYTES) -> None:
        import tifffile

        self.path = str(path)
        try:
            self._tiff = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as error:
            raise _unreadable(self.path, error) from error
        try:
            self._pages = self._level_pages(str(path))
            self._levels = [_PageLevel(self._tiff, page, cache_bytes) for page in self._pages]
            self._mpp = _mpp_of(self._pages[0], self._tiff)
        except BaseException:
            self._tiff.close()
            raise

    def _level_pages(self, path: str) -> list[Any]:
        """The pages of the pyramid levels, their headers checked before any pixel is read."""
        file_size = os.path.getsize(path)
        try:
            first = self._tiff.pages.first
        except (IndexError, ValueError, KeyError) as error:
            raise _unreadable(path, error) from error
        # Before the series: tifffile's series detection divides by the page size.
        check_tiff_page(path, first, file_size)
        try:
            series = self._tiff.series[0]
            pages = [_first_page(level) for level in series.levels]
        except Exception as error:  # tifffile raises many types for damaged files
            raise _unreadable(path, error) from error
        pages = [page for page in pages if _is_image(page)] or pages[:1]
        for page in pages:
            check_tiff_page(path, page, file_size)
            _check_supported(page, path)
        return pages

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((level.width, level.height) for level in self._levels)

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._levels[level].read(x, y, width, height)

    def close(self) -> None:
        self._tiff.close()


def _unreadable(path: str, error: BaseException) -> InvalidInputError:
    return InvalidInputError(
        f"{path} could not be read as a TIFF ({error or type(error).__name__}); check that "
        "the file is complete and a TIFF"
    )


def _first_page(level: Any) -> Any:
    page = level.keyframe if hasattr(level, "keyframe") else level.pages[0]
    return page


def _is_image(page: Any) -> bool:
    return len(page.shape) in (2, 3) and page.shape[0] > 1 and page.shape[1] > 1


def _check_supported(page: Any, path: str) -> None:
    if page.planarconfig != 1 and page.samplesperpixel > 1:
        raise InvalidInputError(
            f"{path} stores colour planes separately (planar TIFF); save it with "
            "interleaved (contiguous) RGB samples"
        )
    if page.dtype not in (np.uint8, np.uint16):
        raise InvalidInputError(f"{path} has {page.dtype} pixels; use 8-bit RGB")
    try:
        page.decode  # noqa: B018 - resolves the codec, raising if it is unavailable
    except (ValueError, KeyError) as error:
        raise InvalidInputError(
            f"{path} uses TIFF compression {page.compression!r}, which needs the optional "
            "'imagecodecs' package (pip install imagecodecs); whole-slide formats such as "
            "SVS can also be read with OpenSlide: pip install 'bcd[slides]'"
        ) from error


def _mpp_of(page: Any, tiff: Any) -> float | None:
    """Microns per pixel from an Aperio description or the resolution tags."""
    description = page.description or ""
    match = _APERIO_MPP.search(description)
    if match:
        value = float(match.group(1))
        if value > 0:
            return value
    if tiff.is_ome and tiff.ome_metadata:
        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tiff.ome_metadata)
        if match and float(match.group(1)) > 0:
            return float(match.group(1))
    resolution = page.tags.get("XResolution")
    unit = page.tags.get("ResolutionUnit")
    if resolution is None or unit is None:
        return None
    microns = _RESOLUTION_UNIT_MICRONS.get(int(unit.value))
    numerator, denominator = resolution.value
    if microns is None or not numerator or not denominator:
        return None
    pixels_per_unit = numerator / denominator
    mpp = microns / pixels_per_unit
    # Default 72 dpi tags and the like say nothing about magnification.
    return mpp if 0 < mpp < 20 else None


class _PageLevel:
    """One pyramid level: a TIFF page read by segment."""

    def __init__(self, tiff: Any, page: Any, cache_bytes: int) -> None:
        self._tiff = tiff
        self._page = page
        self.height, self.width = int(page.shape[0]), int(page.shape[1])
        self._memmap: np.ndarray | None = None
        if page.is_contiguous and page.compression == 1 and page.is_memmappable:
            self._memmap = page.asarray(out="memmap")
        segment: tuple[int, int] = (
            (int(page.tilelength), int(page.tilewidth))
            if page.is_tiled
            else (int(page.rowsperstrip or self.height), self.width)
        )
        self._segment_height = min(segment[0] or self.height, self.height)
        self._segment_width = segment[1]
        self._segments_across = -(-self.width // self._segment_width)
        segment_bytes = self._segment_height * self._segment_width * max(page.samplesperpixel, 1)
        self._cache_size = max(4, cache_bytes // max(segment_bytes, 1))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        if self._memmap is not None:
            return as_rgb(np.asarray(self._memmap[y : y + height, x : x + width]))
        out = np.empty((height, width, 3), dtype=np.uint8)
        seg_h, seg_w = self._segment_height, self._segment_width
        for seg_row in range(y // seg_h, (y + height - 1) // seg_h + 1):
            for seg_col in range(x // seg_w, (x + width - 1) // seg_w + 1):
                segment = self._segment(seg_row * self._segments_across + seg_col)
                top, left = seg_row * seg_h, seg_col * seg_w
                y0, y1 = max(y, top), min(y + height, top + seg_h, self.height)
                x0, x1 = max(x, left), min(x + width, left + seg_w, self.width)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = segment[
                    y0 - top : y1 - top, x0 - left : x1 - left
                ]
        return out

    def _segment(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        page = self._page
        handle = self._tiff.filehandle
        handle.seek(page.dataoffsets[index])
        data = handle.read(page.databytecounts[index])
        try:
            decoded, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as error:  # codec errors have no common base class
            raise InvalidInputError(
                f"TIFF segment {index} could not be decoded ({error}); the file may be truncated"
            ) from error
        if decoded is None:
            decoded = np.full((1, self._segment_height, self._segment_width, 3), 255, np.uint8)
        segment = as_rgb(np.asarray(decoded)[0])
        self._cache[index] = segment
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return segment
