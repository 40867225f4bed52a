"""DICOM whole-slide images (VL Whole Slide Microscopy) through ``wsidicom``.

A DICOM slide is a series of instances, usually one file per pyramid level.
Opening one of its files opens the whole series: the files beside it that
belong to the same series (same ``SeriesInstanceUID``) become the other
levels, and a folder opens all its DICOM files; an upload brings the series
as one zip, which :mod:`bcd.slides._archives` checks and unpacks into such a
folder. ``wsidicom`` is an optional dependency (``pip install 'bcd[slides]'``),
imported only when such a slide is opened; frames are decoded one tile at a
time, so a region read never decodes a whole level.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from bcd.errors import DependencyMissingError, InvalidInputError
from bcd.slides.readers._array import as_rgb
from bcd.slides.readers._base import BaseSlideReader
from bcd.slides.readers._checks import check_size

logger = logging.getLogger(__name__)

#: Offset of the ``DICM`` magic in a DICOM Part 10 file (after the 128-byte preamble).
DICOM_MAGIC_OFFSET = 128
# More files than this beside a slide are not searched for its other levels.
_MAX_SIBLINGS = 256


def import_wsidicom() -> Any:
    """Import ``wsidicom`` or explain how to install it.

    Raises:
        DependencyMissingError: When wsidicom is missing.
    """
    try:
        import wsidicom
    except ImportError as error:
        raise DependencyMissingError(
            "DICOM whole-slide images need wsidicom; install it with: "
            f"pip install 'bcd[slides]' ({error})"
        ) from error
    return wsidicom


def is_dicom(path: str | Path) -> bool:
    """Whether a file is a DICOM Part 10 file (``DICM`` after the preamble)."""
    with open(path, "rb") as handle:
        head = handle.read(DICOM_MAGIC_OFFSET + 4)
    return head[DICOM_MAGIC_OFFSET:] == b"DICM"


def series_files(path: str | Path) -> list[Path]:
    """The files of the DICOM series that ``path`` belongs to.

    Args:
        path: One DICOM file of the slide, or a folder holding the slide's files.

    Returns:
        ``path`` itself first, then the DICOM files beside it with the same
        ``SeriesInstanceUID`` (for a folder: every DICOM file in it).
    """
    path = Path(path)
    if path.is_dir():
        return sorted(item for item in path.iterdir() if item.is_file() and is_dicom(item))
    series = _series_uid(path)
    files = [path]
    if series is None:
        return files
    siblings = sorted(item for item in path.parent.iterdir() if item.is_file() and item != path)
    if len(siblings) > _MAX_SIBLINGS:
        logger.info("not searching %d files beside a DICOM slide for its levels", len(siblings))
        return files
    files += [item for item in siblings if is_dicom(item) and _series_uid(item) == series]
    return files


def _series_uid(path: Path) -> str | None:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # pydicom raises many types for files it cannot parse
        return None
    value = header.get("SeriesInstanceUID")
    return str(value) if value else None


class DicomSlideReader(BaseSlideReader):
    """A DICOM whole-slide image (one series), opened with wsidicom.

    Args:
        path: One file of the slide (its series' other files are found beside
            it) or a folder holding the slide's files.

    Raises:
        DependencyMissingError: Without wsidicom installed.
        InvalidInputError: If the files are not a readable DICOM whole slide.
    """

    format = "dicom"

    def __init__(self, path: str | Path) -> None:
        wsidicom = import_wsidicom()
        self.path = str(path)
        files = series_files(path)
        try:
            self._wsi = wsidicom.WsiDicom.open(files)
        except Exception as error:  # wsidicom and pydicom raise many types for bad files
            reason = str(error) or type(error).__name__
            raise InvalidInputError(
                f"{self.path} could not be opened as a DICOM whole slide ({reason}); check "
                "that the file is complete and a VL Whole Slide Microscopy image"
            ) from error
        try:
            self._levels = list(self._wsi.pyramid.levels)
            for level in self._levels:
                check_size(self.path, "DICOM", int(level.size.width), int(level.size.height))
            self._downsamples, self._mpp = _spacing_of(self._levels)
            self._check_complete()
        except BaseException:
            self._wsi.close()
            raise

    def _check_complete(self) -> None:
        """Read each level's last pixel: its frame comes last, so a cut file fails here.

        Raises:
            InvalidInputError: Naming the level whose pixel data is missing.
        """
        for index, (width, height) in enumerate(self.level_dimensions):
            try:
                self._read(index, width - 1, height - 1, 1, 1)
            except InvalidInputError as error:
                raise InvalidInputError(
                    f"{self.path} is truncated or damaged: the pixel data of its DICOM level "
                    f"{index} ({width}×{height}) cannot be read ({error.__cause__}); upload the "
                    "complete file"
                ) from error

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(level.size.width), int(level.size.height)) for level in self._levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples or super().level_downsamples

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        # wsidicom names a level by its scale (2**n), reading in that level's pixels.
        try:
            region = self._wsi.read_region(
                (x, y), self._levels[level].level, (width, height), as_array=True
            )
        except Exception as error:  # frame decoders raise many types for damaged data
            raise InvalidInputError(
                f"{self.path} could not be read at level {level}, ({x}, {y}) ({error}); the "
                "file may be truncated or damaged: upload the complete file"
            ) from error
        return as_rgb(np.asarray(region))

    def close(self) -> None:
        self._wsi.close()


def _spacing_of(levels: list[Any]) -> tuple[tuple[float, ...] | None, float | None]:
    """Downsamples and level-0 microns per pixel from the levels' ``PixelSpacing`` (mm).

    Returns ``(None, None)`` when a level records no spacing: the downsamples
    then come from the level sizes, and the resolution is unknown.
    """
    spacings = [level.pixel_spacing for level in levels]
    if any(spacing is None or not float(spacing.width) > 0 for spacing in spacings):
        return None, None
    base = float(spacings[0].width)
    return tuple(float(spacing.width) / base for spacing in spacings), base * 1000
