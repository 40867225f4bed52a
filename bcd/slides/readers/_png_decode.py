"""Decode an 8-bit RGB PNG on several cores, top rows first (needs ``imagecodecs``).

A PNG's pixels are one zlib stream of filtered scanlines, so a plain decoder
is single-threaded, and libpng inflates with classic zlib. Here the stream is
inflated once with zlib-ng (about 2.5x faster), then the scanlines are cut
into parts that do not depend on each other and unfiltered on background
threads, top parts first (:class:`ProgressivePng`), so a reader can use the
top of the picture while the rest decodes. A scanline filtered with ``None``
or ``Sub`` looks only to its left, never at the row above, so a part may
start at any such row (PNG encoders pick ``Sub`` for many rows; with none, the
picture is one part). Each part is unfiltered by libpng: it is re-wrapped as
a small PNG whose pixel data is stored (deflate without compression), which
libpng reads back cheaply.

Only 8-bit RGB, non-interlaced PNGs without transparency take this path; for
anything else, or anything unexpected in the file, :meth:`ProgressivePng.open`
returns ``None`` and the caller decodes the file the ordinary way (whose
decoder then explains what is wrong with a damaged file). While decoding, the
inflated scanlines are kept beside the picture: about twice its size.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Filter types that never refer to the row above: a part may start at such a row.
_INDEPENDENT_FILTERS = (0, 1)
_MAX_FILTER = 4
# Parts of about this many bytes of scanlines: the top rows are ready early,
# and the re-wrapped copies stay small.
_PART_BYTES = 2 * 1024**2
_MAX_WORKERS = 4

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def worker_count() -> int:
    """Threads worth using for CPU-bound work on this machine (1 to 4)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_WORKERS, cores))


def parallel_map(work: Callable[[_Item], _Result], items: Iterable[_Item]) -> list[_Result]:
    """``[work(item) for item in items]``, run on :func:`worker_count` threads.

    Worth it for functions that release the GIL (codecs, Pillow, zlib).
    """
    pending = list(items)
    workers = min(worker_count(), len(pending))
    if workers <= 1:
        return [work(item) for item in pending]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slide-codec") as pool:
        return list(pool.map(work, pending))


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    pixel_data: list[memoryview]

    @property
    def row_bytes(self) -> int:
        return 1 + 3 * self.width  # filter byte + RGB


def _chunk(kind: bytes, body: Any) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(kind))
    return b"".join((struct.pack(">I", len(body)), kind, body, struct.pack(">I", crc)))


def _layout(data: bytes) -> _Layout | None:
    """Size and IDAT data of an 8-bit RGB non-interlaced PNG; ``None`` for anything else."""
    if not data.startswith(SIGNATURE):
        return None
    view = memoryview(data)
    position, header, pixel_data = len(SIGNATURE), None, []
    while position + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = bytes(view[position + 4 : position + 8])
        body = view[position + 8 : position + 8 + length]
        end = position + 12 + length
        if end > len(data):
            return None  # truncated chunk
        if kind in (b"IHDR", b"IDAT"):
            (crc,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(body, zlib.crc32(kind)) != crc:
                return None
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            pixel_data.append(body)
        elif kind == b"tRNS":
            return None  # transparency: composited by the ordinary path
        elif kind == b"IEND":
            break
        position = end
    if header is None or not pixel_data:
        return None
    width, height, depth, colour, compression, filtering, interlace = header
    if (depth, colour, compression, filtering, interlace) != (8, 2, 0, 0, 0):
        return None
    if width == 0 or height == 0:
        return None
    return _Layout(width, height, pixel_data)


def _part_starts(filters: np.ndarray, row_bytes: int) -> list[int]:
    """First rows of the parts: about ``_PART_BYTES`` each, at rows that look only left."""
    height = len(filters)
    rows_per_part = max(1, _PART_BYTES // row_bytes)
    parts = max(worker_count(), -(-height // rows_per_part))
    candidates = np.flatnonzero(np.isin(filters, _INDEPENDENT_FILTERS))
    starts = [0]
    for part in range(1, parts):
        target = part * height // parts
        at = int(np.searchsorted(candidates, max(target, starts[-1] + 1)))
        if at < len(candidates):
            starts.append(int(candidates[at]))
    return sorted(set(starts))


def _unfilter(scanlines: np.ndarray, out: np.ndarray) -> None:
    """Unfilter ``(rows, 1 + 3 * width)`` scanlines that start a PNG into ``out`` (libpng).

    The rows are re-wrapped as a PNG whose pixel data is stored, built in one
    buffer (no copies beyond the stored blocks), and decoded straight into ``out``.
    """
    import imagecodecs

    codecs: Any = imagecodecs  # its stubs accept bytes only; any buffer works
    rows, width = out.shape[0], out.shape[1]
    header = struct.pack(">IIBBBBB", width, rows, 8, 2, 0, 0, 0)
    head = SIGNATURE + _chunk(b"IHDR", header) + b"\0\0\0\0IDAT"
    size = scanlines.nbytes
    picture = np.empty(len(head) + size + (size >> 10) + 64, dtype=np.uint8)
    picture[: len(head)] = np.frombuffer(head, dtype=np.uint8)
    stored = codecs.zlibng_encode(scanlines, level=0, out=picture[len(head) :])  # stored blocks
    end = len(head) + len(stored)
    picture[len(head) - 8 : len(head) - 4] = np.frombuffer(
        struct.pack(">I", len(stored)), dtype=np.uint8
    )
    crc = codecs.deflate_crc32(picture[len(head) - 4 : end])
    tail = struct.pack(">I", crc) + _chunk(b"IEND", b"")
    picture[end : end + len(tail)] = np.frombuffer(tail, dtype=np.uint8)
    codecs.png_decode(picture[: end + len(tail)], out=out)


def _scanlines(data: bytes) -> tuple[np.ndarray, int] | None:
    """The inflated, still filtered ``(height, 1 + 3 * width)`` scanlines and the width.

    ``None`` when the fast path does not apply or the pixel data is damaged.
    """
    try:
        import imagecodecs
    except ImportError:
        return None
    if not getattr(imagecodecs.ZLIBNG, "available", False):
        return None
    layout = _layout(data)
    if layout is None:
        return None
    expected = layout.height * layout.row_bytes
    try:
        # Exactly the expected size: surplus data is an error, missing data a short result.
        inflated = imagecodecs.zlibng_decode(b"".join(layout.pixel_data), out=expected)
    except Exception as error:  # a damaged stream: the ordinary decoder explains
        logger.debug("zlib-ng could not inflate the PNG data (%s)", error)
        return None
    if len(inflated) != expected:
        return None
    scanlines = np.frombuffer(inflated, dtype=np.uint8).reshape(layout.height, layout.row_bytes)
    if int(scanlines[:, 0].max()) > _MAX_FILTER:
        return None
    return scanlines, layout.width


class ProgressivePng:
    """An 8-bit RGB PNG inflated at once and unfiltered in background threads.

    Rows become readable top to bottom as their parts finish; :meth:`wait`
    blocks until a number of rows is ready. Safe to read from several threads.
    Open it with :meth:`open`.

    Attributes:
        image: uint8 ``(height, width, 3)``; rows below :attr:`rows_ready`
            are not decoded yet.
    """

    def __init__(
        self,
        scanlines: np.ndarray,
        width: int,
        fallback: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self._fallback = fallback
        self.image = np.empty((len(scanlines), width, 3), dtype=np.uint8)
        starts = _part_starts(scanlines[:, 0], scanlines.shape[1])
        self._parts = list(zip(starts, [*starts[1:], len(scanlines)], strict=True))
        self._finished: set[int] = set()
        self._done_parts = 0  # parts finished without a gap from the top
        self._ready = 0
        self._error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, args=(scanlines,), name="png-unfilter", daemon=True
        )
        self._thread.start()

    @classmethod
    def open(
        cls, data: bytes, fallback: Callable[[], np.ndarray] | None = None
    ) -> ProgressivePng | None:
        """Start decoding ``data`` (a whole PNG file).

        Args:
            data: The file's bytes.
            fallback: Decodes the whole picture another way, should
                unfiltering fail in the background (it is not expected to
                for a file that passed the checks here).

        Returns:
            The image being decoded, or ``None`` when this path does not apply
            (another colour type or bit depth, interlacing, transparency,
            ``imagecodecs`` missing) or the file is damaged (a bad checksum,
            truncated or surplus pixel data, an unknown row filter): the caller
            then decodes it the ordinary way, whose decoder explains the damage.
        """
        found = _scanlines(data)
        return None if found is None else cls(*found, fallback=fallback)

    @property
    def rows_ready(self) -> int:
        """Rows, from the top, that are decoded."""
        return self._ready

    def wait(self, rows: int) -> None:
        """Block until the top ``rows`` rows are decoded.

        Raises:
            RuntimeError: If unfiltering and the fallback both failed.
        """
        with self._condition:
            while self._ready < min(rows, len(self.image)) and self._error is None:
                self._condition.wait()
            if self._error is not None:
                raise RuntimeError(f"PNG rows could not be unfiltered: {self._error}")

    def close(self) -> None:
        """Wait for the background threads to finish."""
        self._thread.join()

    def _run(self, scanlines: np.ndarray) -> None:
        def unfilter(index: int) -> None:
            first, last = self._parts[index]
            _unfilter(scanlines[first:last], self.image[first:last])
            with self._condition:
                self._finished.add(index)
                while self._done_parts in self._finished:
                    self._done_parts += 1
                if self._done_parts:
                    self._ready = self._parts[self._done_parts - 1][1]
                self._condition.notify_all()

        try:
            parallel_map(unfilter, range(len(self._parts)))
        except Exception as error:
            logger.debug("PNG rows could not be unfiltered (%s); decoding another way", error)
            self._decode_otherwise(error)

    def _decode_otherwise(self, error: Exception) -> None:
        try:
            if self._fallback is None:
                raise error
            self.image[:] = self._fallback()
        except Exception as failure:  # handed to the readers waiting on rows
            with self._condition:
                self._error = failure
                self._condition.notify_all()
            return
        with self._condition:
            self._ready = len(self.image)
            self._condition.notify_all()


def decode_rgb_png(data: bytes) -> np.ndarray | None:
    """Decode an 8-bit RGB PNG with zlib-ng and parallel unfiltering, all at once.

    Args:
        data: The whole file.

    Returns:
        uint8 ``(height, width, 3)``, pixel for pixel what any PNG decoder
        gives, or ``None`` as for :meth:`ProgressivePng.open`.
    """
    progressive = ProgressivePng.open(data)
    if progressive is None:
        return None
    try:
        progressive.wait(len(progressive.image))
    except RuntimeError as error:
        logger.debug("%s; using the ordinary decoder", error)
        return None
    return progressive.image
