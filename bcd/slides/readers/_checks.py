"""Checks of what a slide file declares, before any pixel is read.

A damaged or truncated file often still has a readable header that declares
an impossible image: 0×0 pixels, 2³²−1 pixels a side, or a 100000×100000
picture in a few hundred bytes. Each reader checks the header here first, so
such a file fails with a reason its owner can act on ("the TIFF declares 0×0
pixels") instead of an error deep inside a codec or the tiling arithmetic.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from bcd.errors import InvalidInputError

#: Most pixels a side of level 0: 25 cm at 0.25 µm/px, longer than any glass slide.
MAX_SIDE = 1_000_000
# Deflate never compresses better than 1032:1, so a PNG needs at least this
# share of its raw scanlines in the file.
_DEFLATE_MAX_RATIO = 1032
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Huffman-coded JPEG frames (SOF0–3, 5–7); arithmetic coding (SOF9–15) packs tighter.
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_ALL_FRAMES = _HUFFMAN_FRAMES | {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Far enough into a JPEG to pass its metadata segments (EXIF, ICC, thumbnails).
_JPEG_HEAD_BYTES = 4 * 1024**2


def check_size(path: str, kind: str, width: int, height: int) -> None:
    """Refuse a declared size that no image can have.

    Args:
        path: The file, for the message.
        kind: What declares the size ("PNG", "TIFF", "slide", …).
        width: Declared width in pixels.
        height: Declared height in pixels.

    Raises:
        InvalidInputError: A side is 0 (or negative) or over :data:`MAX_SIDE`.
    """
    if width <= 0 or height <= 0:
        raise InvalidInputError(
            f"{path} is damaged: the {kind} declares {width}×{height} pixels, and an image "
            "needs at least one pixel a side; export or copy the slide again"
        )
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InvalidInputError(
            f"{path} is damaged: the {kind} declares {width}×{height} pixels, more than any "
            f"slide scan ({MAX_SIDE:,} a side at most); export or copy the slide again"
        )


def _cannot_hold(path: str, kind: str, width: int, height: int, size: int) -> InvalidInputError:
    return InvalidInputError(
        f"{path} is truncated or damaged: the {kind} declares {width}×{height} pixels, "
        f"which its {size:,} bytes cannot hold; upload the complete file"
    )


def check_png(path: str, head: bytes, file_size: int) -> None:
    """Check the size a PNG's IHDR declares against the format and the file's length.

    Args:
        path: The file, for messages.
        head: At least the first 29 bytes of the file (signature and IHDR).
        file_size: The file's length in bytes.

    Raises:
        InvalidInputError: An impossible size, or more pixels than the file can hold.
    """
    if len(head) < 29 or head[12:16] != b"IHDR":
        return  # no header to check: the decoder explains
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    check_size(path, "PNG", width, height)
    channels = _PNG_CHANNELS.get(colour, 1)
    raw = height * (1 + math.ceil(width * channels * max(depth, 1) / 8))
    if file_size * _DEFLATE_MAX_RATIO < raw:
        raise _cannot_hold(path, "PNG", width, height, file_size)


def check_jpeg(path: str, head: bytes, file_size: int) -> None:
    """Check the size a JPEG's frame header (SOF) declares.

    A Huffman-coded JPEG spends at least one bit per MCU (at most 32×32
    pixels), which bounds how many pixels a file of its length can hold.

    Args:
        path: The file, for messages.
        head: The start of the file (its metadata segments and frame header).
        file_size: The file's length in bytes.

    Raises:
        InvalidInputError: An impossible size, or more pixels than the file can hold.
    """
    frame = _jpeg_frame(head)
    if frame is None:
        return  # no frame header found: the decoder explains
    marker, width, height = frame
    check_size(path, "JPEG", width, height)
    units = math.ceil(width / 32) * math.ceil(height / 32)
    if marker in _HUFFMAN_FRAMES and file_size * 8 < units:
        raise _cannot_hold(path, "JPEG", width, height, file_size)


def _jpeg_frame(head: bytes) -> tuple[int, int, int] | None:
    """``(SOF marker, width, height)`` of the first frame header, walking the segments."""
    position = 2  # after SOI
    while position + 4 <= len(head):
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            position += 2
            continue
        (length,) = struct.unpack(">H", head[position + 2 : position + 4])
        if marker in _ALL_FRAMES:
            if position + 9 > len(head):
                return None
            height, width = struct.unpack(">HH", head[position + 5 : position + 9])
            return marker, width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        position += 2 + length
    return None


def read_head(path: str, limit: int = _JPEG_HEAD_BYTES) -> bytes:
    """The first ``limit`` bytes of a file."""
    with open(path, "rb") as handle:
        return handle.read(limit)


def check_tiff_page(path: str, page: Any, file_size: int) -> None:
    """Check a TIFF page's declared size and that the file holds its pixel data.

    Args:
        path: The file, for messages.
        page: A ``tifffile.TiffPage``.
        file_size: The file's length in bytes.

    Raises:
        InvalidInputError: An impossible size, a segment table that does not
            match it, or pixel data past the end of the file.
    """
    width, height = int(page.imagewidth), int(page.imagelength)
    check_size(path, "TIFF", width, height)
    offsets, counts = tuple(page.dataoffsets), tuple(page.databytecounts)
    if page.compression == 1:
        samples = max(int(page.samplesperpixel), 1)
        needed = width * height * samples * max(int(page.bitspersample), 1) // 8
        if needed > file_size:
            raise _cannot_hold(path, "TIFF", width, height, file_size)
    expected = _tiff_segments(page, width, height)
    if len(offsets) != expected or len(counts) != expected:
        raise InvalidInputError(
            f"{path} is damaged: the TIFF declares {width}×{height} pixels in {expected:,} "
            f"segments but lists {len(offsets):,}; export or copy the slide again"
        )
    end = max((offset + count for offset, count in zip(offsets, counts, strict=True)), default=0)
    if end > file_size:
        raise InvalidInputError(
            f"{path} is truncated: its TIFF pixel data runs to byte {end:,} but the file "
            f"ends at byte {file_size:,}; upload the complete file"
        )


def _tiff_segments(page: Any, width: int, height: int) -> int:
    """How many tiles or strips a page of that size must list."""
    planes = int(page.samplesperpixel) if page.planarconfig == 2 else 1
    if page.is_tiled:
        across = math.ceil(width / max(int(page.tilewidth), 1))
        down = math.ceil(height / max(int(page.tilelength), 1))
        return across * down * max(planes, 1)
    rows = int(page.rowsperstrip or height)
    return math.ceil(height / max(min(rows, height), 1)) * max(planes, 1)
