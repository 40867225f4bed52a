"""The parallel, progressive PNG decoder gives exactly what any PNG decoder gives.

PNGs are written here row by row with a chosen filter per row (the five PNG
filters, mixed), so every unfiltering case is hit, and split into many small
parts so the parallel and progressive paths run even on small pictures.
Everything this path does not take (other colour types, interlacing,
transparency, damage) must come back as ``None`` and be decoded the ordinary
way, with the ordinary errors.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.errors import InvalidInputError
from bcd.slides import ArraySlideReader, encode_png, open_slide
from bcd.slides.readers import _png_decode
from bcd.slides.readers._png_decode import ProgressivePng, _part_starts, decode_rgb_png

pytest.importorskip("imagecodecs")

NONE, SUB, UP, AVERAGE, PAETH = range(5)


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth(height: int, width: int) -> np.ndarray:
    """A picture with gradients and flat areas, where the filters differ most."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 3) % 256, (y * 5) % 256, ((x + y) // 3) % 256], axis=-1)
    image[height // 3 : height // 2] = (230, 160, 200)
    return image.astype(np.uint8)


def _filtered_row(row: np.ndarray, above: np.ndarray, kind: int) -> np.ndarray:
    """One scanline filtered with PNG filter ``kind`` (from the raw, unfiltered values)."""
    current = row.astype(np.int32)
    up = above.astype(np.int32)
    left = np.concatenate([np.zeros(3, np.int32), current[:-3]])
    up_left = np.concatenate([np.zeros(3, np.int32), up[:-3]])
    if kind == NONE:
        predictor = np.zeros_like(current)
    elif kind == SUB:
        predictor = left
    elif kind == UP:
        predictor = up
    elif kind == AVERAGE:
        predictor = (left + up) // 2
    else:
        estimate = left + up - up_left
        to_left, to_up = np.abs(estimate - left), np.abs(estimate - up)
        to_up_left = np.abs(estimate - up_left)
        predictor = np.where(
            (to_left <= to_up) & (to_left <= to_up_left),
            left,
            np.where(to_up <= to_up_left, up, up_left),
        )
    return np.concatenate([[kind], (current - predictor) % 256]).astype(np.uint8)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(scanlines: bytes, width: int, height: int, interlace: int = 0, depth: int = 8) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, interlace)
    data = zlib.compress(scanlines, 6)
    # Two IDAT chunks, as encoders often write several.
    idat = _chunk(b"IDAT", data[: len(data) // 2]) + _chunk(b"IDAT", data[len(data) // 2 :])
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def _with_filters(image: np.ndarray, filters: list[int]) -> bytes:
    height, width = image.shape[:2]
    rows = image.reshape(height, width * 3)
    above = np.zeros(width * 3, np.uint8)
    lines = []
    for row, kind in zip(rows, filters, strict=True):
        lines.append(_filtered_row(row, above, kind))
        above = row
    return _png(np.concatenate(lines).tobytes(), width, height)


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of about three rows, on three threads: every path runs on small pictures."""
    monkeypatch.setattr(_png_decode, "_PART_BYTES", 3 * (1 + 3 * 37))
    monkeypatch.setattr(_png_decode, "worker_count", lambda: 3)


FILTER_PATTERNS = {
    "none": lambda rows: [NONE] * rows,
    "sub": lambda rows: [SUB] * rows,
    "up": lambda rows: [UP] * rows,
    "average": lambda rows: [AVERAGE] * rows,
    "paeth": lambda rows: [PAETH] * rows,
    "mixed": lambda rows: list(np.random.default_rng(rows).integers(0, 5, rows)),
    "sub-every-fourth": lambda rows: [SUB if row % 4 == 0 else PAETH for row in range(rows)],
}


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize("pattern", list(FILTER_PATTERNS), ids=list(FILTER_PATTERNS))
@pytest.mark.parametrize("picture", ["noise", "smooth"])
def test_every_row_filter_decodes_exactly(pattern: str, picture: str) -> None:
    image = _noise(29, 37) if picture == "noise" else _smooth(29, 37)
    data = _with_filters(image, FILTER_PATTERNS[pattern](29))
    np.testing.assert_array_equal(_pillow(data), image)  # the test's own writer is right
    decoded = decode_rgb_png(data)
    assert decoded is not None
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize(
    "size", [(1, 1), (1, 37), (40, 1), (64, 37)], ids=["1x1", "one-row", "one-column", "64x37"]
)
@pytest.mark.parametrize("writer", ["pillow", "pillow-optimized", "bcd"])
def test_pngs_from_real_encoders_decode_exactly(size: tuple[int, int], writer: str) -> None:
    image = _smooth(*size) if writer == "pillow" else _noise(*size, seed=size[0])
    if writer == "bcd":
        data = encode_png(image)
    else:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", optimize=writer == "pillow-optimized")
        data = buffer.getvalue()
    decoded = decode_rgb_png(data)
    assert decoded is not None
    np.testing.assert_array_equal(decoded, image)


def test_parts_start_only_at_rows_that_do_not_look_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_png_decode, "_PART_BYTES", 10)
    filters = np.array([PAETH, UP, SUB, AVERAGE, NONE, PAETH, PAETH, SUB, UP], dtype=np.uint8)
    starts = _part_starts(filters, row_bytes=10)
    assert starts == [0, 2, 4, 7]
    assert _part_starts(np.full(6, PAETH, np.uint8), row_bytes=10) == [0]  # no choice: one part


def test_rows_become_readable_top_down_while_decoding(
    monkeypatch: pytest.MonkeyPatch, small_parts: None
) -> None:
    image = _noise(30, 37, seed=5)
    data = _with_filters(image, [SUB] * 30)
    gate = threading.Event()
    unfilter = _png_decode._unfilter

    def held(scanlines: np.ndarray, out: np.ndarray) -> None:
        gate.wait(timeout=10)
        unfilter(scanlines, out)

    monkeypatch.setattr(_png_decode, "_unfilter", held)
    progressive = ProgressivePng.open(data)
    assert progressive is not None
    assert progressive.rows_ready == 0
    waited: list[int] = []
    waiter = threading.Thread(target=lambda: (progressive.wait(30), waited.append(1)))
    waiter.start()
    waiter.join(timeout=0.2)
    assert not waited  # still blocked on the held parts
    gate.set()
    waiter.join(timeout=10)
    assert waited and progressive.rows_ready == 30
    np.testing.assert_array_equal(progressive.image, image)
    progressive.close()


def test_rows_are_ready_only_without_a_gap_from_the_top(
    monkeypatch: pytest.MonkeyPatch, small_parts: None
) -> None:
    image = _noise(30, 37, seed=8)
    data = _with_filters(image, [SUB] * 30)
    release, finished = threading.Semaphore(0), threading.Semaphore(0)
    unfilter = _png_decode._unfilter

    def held(scanlines: np.ndarray, out: np.ndarray) -> None:
        assert release.acquire(timeout=10)
        unfilter(scanlines, out)

    def bottom_up(work: Callable[[int], None], items: Iterable[int]) -> list[None]:
        results = []
        for item in reversed(list(items)):  # the last part finishes first
            results.append(work(item))
            finished.release()
        return results

    monkeypatch.setattr(_png_decode, "_unfilter", held)
    monkeypatch.setattr(_png_decode, "parallel_map", bottom_up)
    progressive = ProgressivePng.open(data)
    assert progressive is not None
    parts = len(progressive._parts)
    assert parts > 2
    seen = []
    for _ in range(parts):
        release.release()
        assert finished.acquire(timeout=10)
        seen.append(progressive.rows_ready)
    assert seen == [0] * (parts - 1) + [30]
    np.testing.assert_array_equal(progressive.image, image)
    progressive.close()


def test_png_reader_regions_and_thumbnail_wait_for_the_background(
    tmp_path: Path, small_parts: None
) -> None:
    image = _noise(95, 37, seed=6)
    path = tmp_path / "slide.png"
    path.write_bytes(_with_filters(image, FILTER_PATTERNS["mixed"](95)))
    with open_slide(path) as reader:
        assert reader._progressive is not None
        np.testing.assert_array_equal(reader.read_region(3, 80, 30, 15), image[80:95, 3:33])
        thumbnail, downsample = reader.thumbnail(20)
        assert reader.rows_ready() == 95
    expected, expected_downsample = ArraySlideReader(image).thumbnail(20)
    np.testing.assert_array_equal(thumbnail, expected)
    assert downsample == expected_downsample


def _interlaced(image: np.ndarray) -> bytes:
    """An Adam7-interlaced PNG of ``image`` (all rows unfiltered)."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    passes.append((0, 1, 1, 2))
    lines = []
    for x0, y0, dx, dy in passes:
        sub = image[y0::dy, x0::dx]
        if sub.size:
            rows = sub.reshape(sub.shape[0], -1)
            lines.append(np.concatenate([np.zeros((len(rows), 1), np.uint8), rows], axis=1))
    data = np.concatenate([line.ravel() for line in lines]).tobytes()
    return _png(data, image.shape[1], image.shape[0], interlace=1)


def _pillow_png(image: np.ndarray, mode: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="PNG", **options)
    return buffer.getvalue()


OTHER_PNGS = {
    "interlaced": lambda image: _interlaced(image),
    "grey": lambda image: _pillow_png(image, "L"),
    "rgba": lambda image: _pillow_png(image, "RGBA"),
    "palette": lambda image: _pillow_png(image, "P"),
    "rgb-transparency": lambda image: _pillow_png(image, "RGB", transparency=(1, 2, 3)),
}


@pytest.mark.parametrize("kind", list(OTHER_PNGS), ids=list(OTHER_PNGS))
def test_other_pngs_are_left_to_the_ordinary_decoder(tmp_path: Path, kind: str) -> None:
    image = _smooth(21, 34)
    data = OTHER_PNGS[kind](image)
    assert decode_rgb_png(data) is None
    path = tmp_path / "slide.png"
    path.write_bytes(data)
    with open_slide(path) as reader:
        assert reader._progressive is None
        region = reader.read_region(0, 0, 34, 21)
    if kind == "interlaced":
        np.testing.assert_array_equal(region, image)
    assert region.shape == (21, 34, 3)


def test_sixteen_bit_pngs_are_left_to_the_ordinary_decoder() -> None:
    rows = np.zeros((4, 1 + 6 * 5), np.uint8)
    assert decode_rgb_png(_png(rows.tobytes(), 5, 4, depth=16)) is None


def _damaged(kind: str, image: np.ndarray) -> bytes:
    good = _with_filters(image, [SUB] * len(image))
    at = good.index(b"IDAT")
    (length,) = struct.unpack(">I", good[at - 4 : at])
    rows = image.reshape(len(image), -1)
    scanlines = np.concatenate([np.full((len(rows), 1), NONE, np.uint8), rows], axis=1)
    if kind == "truncated":
        return good[: at + 4 + length // 2]
    if kind == "bad-checksum":
        crc_at = at + 4 + length
        return good[:crc_at] + bytes([good[crc_at] ^ 0xFF]) + good[crc_at + 1 :]
    if kind == "unknown-filter":
        scanlines[3, 0] = 9
    elif kind == "surplus-rows":
        scanlines = np.concatenate([scanlines, scanlines[:2]])
    elif kind == "missing-rows":
        scanlines = scanlines[:-2]
    return _png(scanlines.tobytes(), image.shape[1], image.shape[0])


@pytest.mark.parametrize(
    "kind", ["truncated", "bad-checksum", "unknown-filter", "surplus-rows", "missing-rows"]
)
def test_damaged_pngs_are_left_to_the_ordinary_decoder(kind: str) -> None:
    assert decode_rgb_png(_damaged(kind, _noise(12, 37, seed=7))) is None


@pytest.mark.parametrize("kind", ["truncated", "unknown-filter"])
def test_damaged_pngs_give_the_usual_clear_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "slide.png"
    path.write_bytes(_damaged(kind, _noise(12, 37, seed=7)))
    with pytest.raises(InvalidInputError, match="could not be decoded as an image"):
        open_slide(path)


def test_without_zlib_ng_the_ordinary_decoder_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import imagecodecs

    class Missing:
        available = False

    monkeypatch.setattr(imagecodecs, "ZLIBNG", Missing)
    assert decode_rgb_png(encode_png(_noise(5, 6))) is None
