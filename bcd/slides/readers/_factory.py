"""``open_slide``: the reader factory, choosing a reader from the file's content."""

from __future__ import annotations

from pathlib import Path

from bcd.errors import InvalidInputError, NotFoundError
from bcd.slides.readers._base import BaseSlideReader
from bcd.slides.readers._dicom import DICOM_MAGIC_OFFSET, DicomSlideReader, series_files
from bcd.slides.readers._openslide import OPENSLIDE_SUFFIXES, OpenSlideReader

SUPPORTED_FORMATS = (
    "PNG, JPEG, TIFF (tiled/pyramidal or flat), DICOM whole-slide images (with wsidicom) "
    "and, with OpenSlide, " + ", ".join(suffix[1:].upper() for suffix in OPENSLIDE_SUFFIXES)
)


def sniff_format(path: str | Path) -> str | None:
    """The image format by magic bytes: png, jpeg, tiff, dicom (or ``None``, and for a folder)."""
    if Path(path).is_dir():
        return None
    with open(path, "rb") as handle:
        head = handle.read(DICOM_MAGIC_OFFSET + 4)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[DICOM_MAGIC_OFFSET:] == b"DICM":
        return "dicom"
    return None


def open_slide(path: str | Path) -> BaseSlideReader:
    """Open a slide or image region with the reader that suits it.

    Whole-slide formats (by suffix: SVS, NDPI, MRXS, …) go to OpenSlide; other
    files are recognised by their first bytes, so an upload's name does not
    matter: PNG and JPEG are decoded with Pillow, TIFFs are read by region
    with tifffile, DICOM files with wsidicom (with the other files of their
    series beside them as the other levels).

    Args:
        path: The slide file, or a folder holding a DICOM slide's files.

    Returns:
        An open reader; close it (or use it as a context manager) when done.

    Raises:
        NotFoundError: If the file does not exist.
        DependencyMissingError: For a whole-slide format without OpenSlide, or
            DICOM without wsidicom.
        InvalidInputError: For an unknown format or an undecodable file.
    """
    path = Path(path)
    if path.is_dir():
        if series_files(path):
            return DicomSlideReader(path)
        raise InvalidInputError(
            f"{path.name} is a folder without DICOM files; give a slide file ({SUPPORTED_FORMATS})"
        )
    if not path.is_file():
        raise NotFoundError(f"slide file {str(path)!r} does not exist")
    if path.suffix.lower() in OPENSLIDE_SUFFIXES:
        return OpenSlideReader(str(path))
    kind = sniff_format(path)
    if kind in ("png", "jpeg"):
        from bcd.slides.readers._pillow import PillowSlideReader

        return PillowSlideReader(str(path))
    if kind == "tiff":
        from bcd.slides.readers._tiff import TiffSlideReader

        return TiffSlideReader(str(path))
    if kind == "dicom":
        return DicomSlideReader(path)
    raise InvalidInputError(
        f"{path.name} is not an image bcd can read as a slide; supported: {SUPPORTED_FORMATS}"
    )
