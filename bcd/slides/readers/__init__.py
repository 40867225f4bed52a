"""Slide readers: one contract (:class:`BaseSlideReader`), one module per format.

:func:`open_slide` picks the reader; :class:`ArraySlideReader` keeps tests
fast and in memory.
"""

from __future__ import annotations

from bcd.slides.readers._array import ArraySlideReader
from bcd.slides.readers._base import BACKGROUND, BaseSlideReader
from bcd.slides.readers._dicom import DicomSlideReader
from bcd.slides.readers._factory import SUPPORTED_FORMATS, open_slide, sniff_format
from bcd.slides.readers._openslide import OPENSLIDE_SUFFIXES, OpenSlideReader
from bcd.slides.readers._pillow import PillowSlideReader
from bcd.slides.readers._tiff import TiffSlideReader

__all__ = [
    "BACKGROUND",
    "OPENSLIDE_SUFFIXES",
    "SUPPORTED_FORMATS",
    "ArraySlideReader",
    "BaseSlideReader",
    "DicomSlideReader",
    "OpenSlideReader",
    "PillowSlideReader",
    "TiffSlideReader",
    "open_slide",
    "sniff_format",
]
