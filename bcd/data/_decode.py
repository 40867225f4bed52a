"""Decoding and validating patches; runs in import pool workers.

Every failure becomes a *reason* string for the import report: one bad file never
stops an import.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from bcd.data._patch_names import PATCH_SIZE
from bcd.data._sources import BaseSource, SourceSpec

PAD_VALUE = 255
"""Background for padding small patches: white, like the glass around tissue."""

ON_SMALL_CHOICES = ("pad", "skip")


class Rejected(ValueError):
    """A file that cannot be imported; the message is the reason."""


class Skipped(ValueError):
    """A valid but small patch left out because of ``on_small="skip"``."""


def decode_patch(data: bytes, on_small: str = "pad") -> tuple[np.ndarray, int, int]:
    """Decode one patch into a 50×50 RGB array.

    Args:
        data: The file's bytes.
        on_small: ``"pad"`` places a smaller patch at the top-left of a white
            50×50 canvas (edge patches are cut at the slide's right/bottom edge);
            ``"skip"`` leaves it out.

    Returns:
        ``(image, width, height)``: the (50, 50, 3) uint8 image and the original size.

    Raises:
        Rejected: Empty, not an image, corrupt, or dimensions no patch can have.
        Skipped: A small patch with ``on_small="skip"``.
    """
    if not data:
        raise Rejected("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if not (1 <= width <= PATCH_SIZE and 1 <= height <= PATCH_SIZE):
                # Checked before decoding pixels, so a decompression bomb costs nothing.
                raise Rejected(
                    f"absurd dimensions {width}x{height}: a patch is at most "
                    f"{PATCH_SIZE}x{PATCH_SIZE}"
                )
            image.load()
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("not an image (no known image format)") from None
    except Exception as exc:  # Pillow raises many types for damaged files.
        raise Rejected(f"corrupt image ({type(exc).__name__}: {exc})") from None
    if width == PATCH_SIZE and height == PATCH_SIZE:
        return rgb, width, height
    if on_small == "skip":
        raise Skipped(f"smaller than {PATCH_SIZE}x{PATCH_SIZE} ({width}x{height}); skipped")
    padded = np.full((PATCH_SIZE, PATCH_SIZE, 3), PAD_VALUE, dtype=np.uint8)
    padded[:height, :width] = rgb
    return padded, width, height


@dataclass
class ChunkResult:
    """What a worker returns for one chunk of files, in the chunk's order.

    Attributes:
        indices: Indices (into the import's file list) of accepted patches.
        images: (len(indices), 50, 50, 3) uint8.
        widths: Original widths of accepted patches.
        heights: Original heights of accepted patches.
        hashes: sha256 (hex) of each accepted file's bytes.
        rejected: ``(index, reason)`` for files that cannot be imported.
        skipped: ``(index, reason)`` for small patches left out on request.
    """

    indices: list[int] = field(default_factory=list)
    images: np.ndarray = field(
        default_factory=lambda: np.empty((0, PATCH_SIZE, PATCH_SIZE, 3), np.uint8)
    )
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def decode_chunk(source: BaseSource, chunk: list[tuple[int, str]], on_small: str) -> ChunkResult:
    """Read and decode a chunk of files from ``source``.

    Args:
        source: The opened source.
        chunk: ``(index, path)`` pairs.
        on_small: ``"pad"`` or ``"skip"`` (see :func:`decode_patch`).

    Returns:
        The chunk's :class:`ChunkResult`.
    """
    result = ChunkResult()
    images: list[np.ndarray] = []
    for index, path in chunk:
        try:
            data = source.read(path)
        except OSError as exc:
            result.rejected.append((index, f"unreadable file ({exc.strerror or exc})"))
            continue
        try:
            image, width, height = decode_patch(data, on_small)
        except Rejected as exc:
            result.rejected.append((index, str(exc)))
            continue
        except Skipped as exc:
            result.skipped.append((index, str(exc)))
            continue
        images.append(image)
        result.indices.append(index)
        result.widths.append(width)
        result.heights.append(height)
        result.hashes.append(hashlib.sha256(data).hexdigest())
    if images:
        result.images = np.stack(images)
    return result


_worker_source: BaseSource | None = None


def init_worker(spec: SourceSpec) -> None:
    """Pool initializer: open the source once per worker process."""
    global _worker_source
    _worker_source = spec.open()


def decode_chunk_in_worker(chunk: list[tuple[int, str]], on_small: str) -> ChunkResult:
    """:func:`decode_chunk` on the worker's source (see :func:`init_worker`)."""
    assert _worker_source is not None, "init_worker did not run"
    return decode_chunk(_worker_source, chunk, on_small)
