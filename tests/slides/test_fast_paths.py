"""The fast paths of the analysis give exactly what the straightforward code gives.

Each test compares a shortcut (Pillow-held PNGs, the ``imagecodecs`` decoder,
the bincount histogram, the narrow summed-area table, run-length spreading of
tiles over the thumbnail, the PNG encoder) with the plain computation it
replaces, on inputs chosen to hit edges: odd sizes, partial tiles, overlap.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.slides import (
    AnalysisOptions,
    ArraySlideReader,
    analyze_slide,
    encode_png,
    open_slide,
    otsu_threshold,
    plan_grid,
)
from bcd.slides._analysis import tile_tissue_fractions
from bcd.slides._render import grid_to_thumbnail_index, overlay_rgba
from bcd.slides._tissue import _histogram
from bcd.slides.readers import PillowSlideReader
from bcd.slides.readers import _base as reader_base
from tests.slides.conftest import darkness_predict, synthetic_slide


def _noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("max_size", [64, 97, 150, 400], ids=lambda size: f"thumb{size}")
def test_png_reader_thumbnail_equals_the_banded_numpy_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_size: int
) -> None:
    image = _noise(301, 257)
    Image.fromarray(image).save(tmp_path / "slide.png")
    # Small bands, so the reference path really reduces band by band.
    monkeypatch.setattr(reader_base, "_THUMBNAIL_BAND_PIXELS", 257 * 20)
    monkeypatch.setattr(
        "bcd.slides.readers._pillow._decode_rgb_png", lambda path, image: None
    )  # Pillow holds the picture
    with PillowSlideReader(str(tmp_path / "slide.png")) as reader:
        assert reader._picture is not None
        fast, fast_downsample = reader.thumbnail(max_size)
    reference, downsample = ArraySlideReader(image).thumbnail(max_size)
    assert fast_downsample == downsample
    np.testing.assert_array_equal(fast, reference)


def test_png_reader_held_by_pillow_reads_regions_and_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _noise(120, 90)
    Image.fromarray(image).save(tmp_path / "slide.png")
    monkeypatch.setattr("bcd.slides.readers._pillow._decode_rgb_png", lambda path, image: None)
    reader = PillowSlideReader(str(tmp_path / "slide.png"))
    np.testing.assert_array_equal(reader.read_region(10, 20, 30, 40), image[20:60, 10:40])
    edge = reader.read_region(80, 110, 20, 20)
    np.testing.assert_array_equal(edge[:10, :10], image[110:, 80:])
    assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()
    reader.close()
    assert reader._picture is None


def test_imagecodecs_png_decoding_matches_pillow(tmp_path: Path) -> None:
    pytest.importorskip("imagecodecs")
    image = _noise(83, 131)
    path = tmp_path / "slide.png"
    Image.fromarray(image).save(path, dpi=(6350, 6350))
    with open_slide(path) as reader:
        assert reader._picture is None  # decoded by imagecodecs into numpy
        assert reader.mpp == pytest.approx(4.0)
        np.testing.assert_array_equal(reader.read_region(0, 0, 131, 83), image)


def test_imagecodecs_failure_falls_back_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imagecodecs = pytest.importorskip("imagecodecs")

    def broken(data: bytes, **options: object) -> np.ndarray:
        raise imagecodecs.PngError("simulated codec failure")

    def no_inflate(data: bytes, **options: object) -> bytes:
        raise imagecodecs.ZlibngError("simulated codec failure")

    monkeypatch.setattr(imagecodecs, "png_decode", broken)
    monkeypatch.setattr(imagecodecs, "zlibng_decode", no_inflate)
    image = _noise(40, 50)
    Image.fromarray(image).save(tmp_path / "slide.png")
    with open_slide(tmp_path / "slide.png") as reader:
        assert reader._picture is not None
        np.testing.assert_array_equal(reader.read_region(0, 0, 50, 40), image)


def test_background_unfilter_failure_decodes_the_picture_another_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imagecodecs = pytest.importorskip("imagecodecs")

    def broken(data: bytes, **options: object) -> np.ndarray:
        raise imagecodecs.PngError("simulated codec failure")

    monkeypatch.setattr(imagecodecs, "png_decode", broken)
    image = _noise(40, 50)
    Image.fromarray(image).save(tmp_path / "slide.png")
    with open_slide(tmp_path / "slide.png") as reader:
        assert reader._progressive is not None  # rows were to come from the background
        np.testing.assert_array_equal(reader.read_region(0, 0, 50, 40), image)
        assert reader.rows_ready() == 40


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).uniform(0, 255, 5000).astype(np.float32),
        np.random.default_rng(1).integers(0, 256, 5000),
        np.concatenate([np.full(300, 255.0), np.full(200, 0.0), np.full(10, 127.5)]),
        np.random.default_rng(2).uniform(-40, 300, 5000),  # outside 0-255: np.histogram path
    ],
    ids=["float32", "integers", "edges", "out-of-range"],
)
def test_otsu_threshold_equals_the_numpy_histogram_version(values: np.ndarray) -> None:
    histogram, edges = np.histogram(values, bins=256, range=(0.0, 256.0))
    counts, fast_edges = _histogram(values, 256)
    np.testing.assert_array_equal(counts, histogram)
    np.testing.assert_array_equal(fast_edges, edges)
    assert otsu_threshold(values) == _otsu_reference(histogram.astype(np.float64), edges)


def _otsu_reference(histogram: np.ndarray, edges: np.ndarray) -> float:
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = histogram.sum() - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1e-12)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between[(weight_low == 0) | (weight_high == 0)] = -1.0
    best = float(between.max())
    optimal = np.flatnonzero(between >= best * (1 - 1e-9))
    return float((edges[optimal[0] + 1] + edges[optimal[-1] + 1]) / 2)


@pytest.mark.parametrize(
    ("stride", "thumbnail_size"),
    [(50, 400), (25, 400), (50, 173), (35, 96)],
    ids=["adjacent", "overlap", "odd-downsample", "coarse"],
)
def test_tile_tissue_fractions_count_every_pixel(stride: int, thumbnail_size: int) -> None:
    image = synthetic_slide(9, 13, seed=4)
    image[:, 310:333] = 250  # a strip of glass through the tissue
    reader = ArraySlideReader(image)
    grid = plan_grid(reader, stride=stride)
    thumbnail, downsample = reader.thumbnail(thumbnail_size)
    values = np.random.default_rng(3).uniform(0, 80, thumbnail.shape[:2]).astype(np.float32)
    fractions = tile_tissue_fractions(reader, grid, 40.0, values, downsample)

    mask = values > 40.0
    step, size = grid.stride * grid.level0_per_model / downsample, grid.footprint / downsample
    expected = np.zeros((grid.rows, grid.cols), dtype=np.float32)
    for row in range(grid.rows):
        top, bottom = math.floor(row * step), math.ceil(row * step + size)
        for col in range(grid.cols):
            left, right = math.floor(col * step), math.ceil(col * step + size)
            count = mask[top:bottom, left:right].sum()
            expected[row, col] = count / ((bottom - top) * (right - left))
    np.testing.assert_allclose(fractions, expected, rtol=1e-6)


@pytest.mark.parametrize("stride", [50, 20], ids=["adjacent", "dense"])
def test_overlay_spreads_each_tile_over_its_thumbnail_pixels(stride: int) -> None:
    reader = ArraySlideReader(synthetic_slide(10, 14, seed=2))
    analysis = analyze_slide(
        reader, darkness_predict, AnalysisOptions(stride=stride, thumbnail_size=64)
    )
    overlay = overlay_rgba(analysis)
    height, width = analysis.thumbnail.shape[:2]
    rows, cols = grid_to_thumbnail_index(analysis, width, height)
    scored = analysis.tissue[rows][:, cols]
    assert overlay.shape == (height, width, 4) and overlay.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(overlay[..., 3], np.where(scored, 255, 0))
    probabilities = analysis.probabilities[rows][:, cols]
    darkest = np.unravel_index(np.nanargmax(np.where(scored, probabilities, -1)), scored.shape)
    assert overlay[darkest][0] > overlay[darkest][2]  # the most likely IDC pixel is red


@pytest.mark.parametrize("channels", [1, 3, 4], ids=["grey", "rgb", "rgba"])
def test_png_encoder_round_trips_through_pillow(channels: int) -> None:
    pixels = _noise(37, 53, channels, seed=channels)
    decoded = Image.open(io.BytesIO(encode_png(pixels, dpi=(150, 150))))
    assert decoded.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    assert decoded.info["dpi"] == pytest.approx((150, 150), abs=0.05)
    np.testing.assert_array_equal(np.asarray(decoded), pixels)


def test_png_encoder_takes_pillow_images_and_large_pictures() -> None:
    pixels = np.zeros((1500, 1200, 3), dtype=np.uint8)  # more than one block of rows
    pixels[::7, ::5] = (200, 30, 90)
    data = encode_png(Image.fromarray(pixels))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)],
    ids=["two-channels", "float", "empty"],
)
def test_png_encoder_refuses_what_it_cannot_write(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="PNG"):
        encode_png(pixels)


@pytest.mark.parametrize("max_size", [64, 97, 150, 400], ids=lambda size: f"thumb{size}")
def test_png_reader_thumbnail_from_parallel_parts_equals_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_size: int
) -> None:
    pytest.importorskip("imagecodecs")
    monkeypatch.setattr("bcd.slides.readers._pillow.worker_count", lambda: 3)
    image = _noise(301, 257, seed=9)
    Image.fromarray(image).save(tmp_path / "slide.png")
    with PillowSlideReader(str(tmp_path / "slide.png")) as reader:
        assert reader._picture is None  # decoded into numpy
        fast, fast_downsample = reader.thumbnail(max_size)
    reference, downsample = ArraySlideReader(image).thumbnail(max_size)
    assert fast_downsample == downsample
    np.testing.assert_array_equal(fast, reference)


def test_png_encoder_deflates_blocks_in_parallel_into_one_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bcd.slides import _png

    monkeypatch.setattr(_png, "worker_count", lambda: 3)
    monkeypatch.setattr(_png, "_PARALLEL_BYTES", 1000)
    blocks: list[int] = []
    deflate = _png._deflate

    def counting(parts: list[np.ndarray], channels: int, level: int) -> list[bytes]:
        blocks.append(len(parts))
        return deflate(parts, channels, level)

    monkeypatch.setattr(_png, "_deflate", counting)
    pixels = _noise(301, 257, seed=10)
    pixels[100:200] = (230, 160, 200)  # flat rows, as in the heatmap's cells
    data = encode_png(pixels)
    assert blocks == [3]
    stream, position = b"", 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        if data[position + 4 : position + 8] == b"IDAT":
            stream += data[position + 8 : position + 8 + length]
        position += 12 + length
    assert len(zlib.decompress(stream)) == 301 * (1 + 257 * 3)  # checks the Adler-32 too
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
