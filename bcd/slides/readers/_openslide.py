"""Whole-slide formats (SVS, NDPI, MRXS, SCN, …) through OpenSlide.

OpenSlide is an optional dependency (``pip install 'bcd[slides]'``, which
brings ``openslide-python`` and the ``openslide-bin`` library); it is imported
only when such a slide is opened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bcd.errors import DependencyMissingError, InvalidInputError
from bcd.slides.readers._array import as_rgb
from bcd.slides.readers._base import BaseSlideReader
from bcd.slides.readers._checks import check_size

#: File suffixes that only OpenSlide reads.
OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")


def import_openslide() -> Any:
    """Import ``openslide`` or explain how to install it.

    Raises:
        DependencyMissingError: When openslide-python (or its library) is missing.
    """
    try:
        import openslide
    except (ImportError, OSError) as error:
        raise DependencyMissingError(
            "whole-slide formats (SVS, NDPI, MRXS, SCN, …) need OpenSlide; install it with: "
            f"pip install 'bcd[slides]' ({error})"
        ) from error
    return openslide


class OpenSlideReader(BaseSlideReader):
    """A whole-slide image opened with OpenSlide.

    Args:
        path: The slide file (for MRXS, the ``.mrxs`` beside its data folder).

    Raises:
        DependencyMissingError: Without OpenSlide installed.
        InvalidInputError: If OpenSlide cannot open the file.
    """

    format = "openslide"

    def __init__(self, path: str) -> None:
        openslide = import_openslide()
        self.path = str(path)
        try:
            self._slide = openslide.OpenSlide(self.path)
        except (openslide.OpenSlideError, OSError, ValueError) as error:
            raise InvalidInputError(
                f"{self.path} could not be opened as a whole slide ({error}); check that the "
                "file is complete and in a format OpenSlide supports"
            ) from error
        self._errors = openslide.OpenSlideError
        try:
            for width, height in self._slide.level_dimensions:
                check_size(self.path, "slide", int(width), int(height))
        except BaseException:
            self._slide.close()
            raise
        self.format = str(self._slide.properties.get("openslide.vendor", "openslide"))
        mpp = self._slide.properties.get(getattr(openslide, "PROPERTY_NAME_MPP_X", ""))
        try:
            self._mpp = float(mpp) if mpp else None
        except ValueError:
            self._mpp = None
        self._downsamples = tuple(float(value) for value in self._slide.level_downsamples)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        # OpenSlide takes the top-left corner in level-0 coordinates.
        factor = self._downsamples[level]
        location = (round(x * factor), round(y * factor))
        try:
            region = self._slide.read_region(location, level, (width, height))
        except self._errors as error:
            raise InvalidInputError(
                f"{self.path} could not be read at level {level}, ({x}, {y}) ({error}); the "
                "file may be truncated or damaged: upload the complete file"
            ) from error
        return as_rgb(np.asarray(region))

    def close(self) -> None:
        self._slide.close()
