"""One contract, every slide reader: the same scan read through each backend.

The ``backend`` fixture yields each reader on the same synthetic 0.25 µm/px
scan (``scanner_files``): in memory, a PNG (Pillow), a pyramidal JPEG-tiled
TIFF and an Aperio-style SVS (tifffile, and OpenSlide), and a DICOM WSI
series (wsidicom, and OpenSlide). Every test below runs on all of them, as Optuna's storage
tests run on every storage. Backends whose optional library is missing skip.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bcd.slides import plan_grid, read_tile
from bcd.slides._grid import read_band
from bcd.slides.readers import (
    ArraySlideReader,
    BaseSlideReader,
    DicomSlideReader,
    OpenSlideReader,
    PillowSlideReader,
    TiffSlideReader,
    open_slide,
)
from tests.slides.scanner_files import SCAN_DOWNSAMPLES, SCAN_MPP, SCAN_SIZE

#: Backend id → (reader format, whether its pixels are stored losslessly, levels stored).
BACKENDS = {
    "array": ("array", True, 3),
    "pillow-png": ("png", True, 1),
    "tifffile-tiff": ("tiff", False, 3),
    "tifffile-svs": ("tiff", False, 3),
    "openslide-tiff": ("generic-tiff", False, 3),
    "openslide-svs": ("aperio", False, 3),
    "openslide-dicom": ("dicom", False, 3),
    "wsidicom-dicom": ("dicom", False, 3),
}
#: Backend id → the reader class that must serve it.
READERS = {
    "array": ArraySlideReader,
    "pillow-png": PillowSlideReader,
    "tifffile-tiff": TiffSlideReader,
    "tifffile-svs": TiffSlideReader,
    "openslide-tiff": OpenSlideReader,
    "openslide-svs": OpenSlideReader,
    "openslide-dicom": OpenSlideReader,
    "wsidicom-dicom": DicomSlideReader,
}
# JPEG at quality 90 on this content: a small mean error, larger only at sharp edges.
_JPEG_MEAN_ERROR, _JPEG_MAX_ERROR = 3.0, 48


@dataclass
class Backend:
    """A reader on the synthetic scan, and what it must return."""

    name: str
    reader: BaseSlideReader
    levels: list[np.ndarray]
    lossless: bool
    format: str

    def assert_pixels(self, actual: np.ndarray, expected: np.ndarray) -> None:
        """Equal for lossless storage, within JPEG's error otherwise."""
        assert actual.shape == expected.shape and actual.dtype == np.uint8
        if self.lossless:
            np.testing.assert_array_equal(actual, expected)
            return
        error = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
        assert error.mean() < _JPEG_MEAN_ERROR and error.max() <= _JPEG_MAX_ERROR, (
            f"{self.name}: mean error {error.mean():.2f}, max {error.max()}"
        )


def _open(name: str, request: pytest.FixtureRequest) -> BaseSlideReader:
    if name == "array":
        return ArraySlideReader(list(request.getfixturevalue("scan_levels")), mpp=SCAN_MPP)
    if name == "pillow-png":
        return open_slide(request.getfixturevalue("scan_png"))
    if name.startswith("openslide"):
        pytest.importorskip("openslide", exc_type=ImportError)
    if name == "tifffile-tiff":
        return open_slide(request.getfixturevalue("scan_tiff"))
    if name == "tifffile-svs":
        return TiffSlideReader(str(request.getfixturevalue("scan_svs")))
    if name == "openslide-tiff":
        return OpenSlideReader(str(request.getfixturevalue("scan_tiff")))
    if name == "openslide-svs":
        return open_slide(request.getfixturevalue("scan_svs"))
    if name == "openslide-dicom":
        return OpenSlideReader(str(request.getfixturevalue("scan_dicom")[0]))
    return open_slide(request.getfixturevalue("scan_dicom")[0])


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, scan_levels: list[np.ndarray]) -> Iterator[Backend]:
    name = request.param
    reader_format, lossless, level_count = BACKENDS[name]
    reader = _open(name, request)
    try:
        yield Backend(name, reader, scan_levels[:level_count], lossless, reader_format)
    finally:
        reader.close()


def test_each_format_has_its_reader(backend: Backend) -> None:
    assert isinstance(backend.reader, READERS[backend.name])
    assert backend.reader.format == backend.format


def test_dimensions_levels_and_downsamples(backend: Backend) -> None:
    reader = backend.reader
    assert reader.dimensions == SCAN_SIZE
    assert reader.level_count == len(backend.levels)
    assert reader.level_dimensions == tuple(
        (level.shape[1], level.shape[0]) for level in backend.levels
    )
    assert reader.level_downsamples == pytest.approx(SCAN_DOWNSAMPLES[: reader.level_count])


def test_the_resolution_is_read_from_the_file(backend: Backend) -> None:
    assert backend.reader.mpp == pytest.approx(SCAN_MPP, rel=1e-3)


def _regions(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Inside regions of a level: a corner, across tile borders, the far corner."""
    return [
        (0, 0, min(64, width), min(64, height)),
        (width // 3, height // 4, width // 3, height // 2),
        (max(width - 90, 0), max(height - 70, 0), min(90, width), min(70, height)),
    ]


def test_regions_match_the_source_pixels_at_every_level(backend: Backend) -> None:
    for level, source in enumerate(backend.levels):
        height, width = source.shape[:2]
        for x, y, w, h in _regions(width, height):
            region = backend.reader.read_region(x, y, w, h, level)
            backend.assert_pixels(region, source[y : y + h, x : x + w])


def test_outside_the_image_reads_white(backend: Backend) -> None:
    for level, source in enumerate(backend.levels):
        height, width = source.shape[:2]
        corner = backend.reader.read_region(width - 40, height - 30, 100, 80, level)
        assert corner.shape == (80, 100, 3)
        backend.assert_pixels(corner[:30, :40], source[height - 30 :, width - 40 :])
        assert (corner[30:] == 255).all() and (corner[:, 40:] == 255).all()
        origin = backend.reader.read_region(-25, -15, 60, 50, level)
        backend.assert_pixels(origin[15:, 25:], source[:35, :35])
        assert (origin[:15] == 255).all() and (origin[:, :25] == 255).all()
    beyond = backend.reader.read_region(SCAN_SIZE[0] + 10, 0, 20, 20)
    assert (beyond == 255).all()


def test_the_thumbnail_is_the_whole_slide_shrunk(
    backend: Backend, scan_levels: list[np.ndarray]
) -> None:
    thumbnail, downsample = backend.reader.thumbnail(256)
    assert thumbnail.shape == (192, 256, 3) and downsample == pytest.approx(16.0)
    # Box-averaging level 0 by 16 or reading the 16x level agree within rounding.
    error = np.abs(thumbnail.astype(np.int16) - scan_levels[2].astype(np.int16))
    assert error.mean() < _JPEG_MEAN_ERROR


def test_tiles_at_4_um_come_from_the_16x_level_without_level_0_in_memory(
    backend: Backend, scan_levels: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = backend.reader
    pyramidal = reader.level_count > 1
    grid = plan_grid(reader)
    assert grid.slide_mpp == pytest.approx(SCAN_MPP, rel=1e-3)
    assert (grid.rows, grid.cols) == (4, 6)  # 192 x 256 model pixels in 50 px tiles
    if pyramidal:
        assert (grid.level, grid.scale, grid.level0_per_model) == (2, 1.0, pytest.approx(16.0))
    else:
        assert grid.level == 0 and grid.scale == pytest.approx(1 / 16)

    levels_read: list[int] = []
    read = reader._read

    def spy(level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        levels_read.append(level)
        return read(level, x, y, width, height)

    monkeypatch.setattr(reader, "_read", spy)
    tracemalloc.start()
    try:
        for row in range(grid.rows):
            band = read_band(reader, grid, row, 1)
            assert band.shape == (50, (grid.cols - 1) * 50 + 50, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert levels_read and set(levels_read) == {grid.level}
    if pyramidal:
        level0_bytes = SCAN_SIZE[0] * SCAN_SIZE[1] * 3
        assert peak < level0_bytes / 20, f"peak {peak:,} bytes while reading 4 µm/px tiles"
    tile, expected = read_tile(reader, grid, 1, 2), scan_levels[2][50:100, 100:150]
    if pyramidal:
        backend.assert_pixels(tile, expected)
    else:  # resampled from level 0 by Pillow's filter rather than box-averaged
        error = np.abs(tile.astype(np.int16) - expected.astype(np.int16))
        assert tile.shape == (50, 50, 3) and error.mean() < _JPEG_MEAN_ERROR


@pytest.mark.parametrize("kind", ["svs", "dicom"])
def test_slide_analyze_end_to_end(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    from typer.testing import CliRunner

    from bcd.cli.main import build_app
    from bcd.testing.models import write_tiny_model

    if kind == "svs":
        pytest.importorskip("openslide", exc_type=ImportError)
        slide, expected_format = request.getfixturevalue("scan_svs"), "aperio"
    else:
        slide, expected_format = request.getfixturevalue("scan_dicom")[0], "dicom"
    model = write_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    arguments = ["slide", "analyze", str(slide), "--model-dir", str(model), "--out", str(out)]
    result = CliRunner().invoke(build_app(), arguments)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["slide"]["format"] == expected_format
    assert (report["slide"]["width"], report["slide"]["height"]) == SCAN_SIZE
    assert report["slide"]["mpp"] == pytest.approx(SCAN_MPP)
    assert report["slide"]["mpp_source"] == "file"
    assert report["analysis"]["level"] == 2 and report["analysis"]["resampling"] == 1.0
    assert (report["analysis"]["rows"], report["analysis"]["cols"]) == (4, 6)
    assert report["tiles"]["tissue"] > 0
    probabilities = np.load(out / "probabilities.npy")
    assert probabilities.shape == (4, 6)
    for name in ("heatmap.png", "report.pdf", "thumbnail.jpg"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize("kind", ["svs", "dicom"])
def test_a_scanner_file_uploaded_to_post_slides(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """One uploaded file: a DICOM series' level-0 file alone is a one-level slide."""
    import time

    from fastapi.testclient import TestClient

    from bcd.config import Settings
    from bcd.serving import EndpointSpec, InMemoryEndpointSource, VariantSpec, create_app
    from bcd.testing.models import write_tiny_model

    if kind == "svs":
        pytest.importorskip("openslide", exc_type=ImportError)
        slide, name, expected = request.getfixturevalue("scan_svs"), "case.svs", ("aperio", 3)
    else:
        slide, name, expected = request.getfixturevalue("scan_dicom")[0], "case.dcm", ("dicom", 1)
    model = write_tiny_model(tmp_path / "model")
    spec = EndpointSpec(
        name="ep",
        status="InService",
        config_name="ep-config",
        version=1,
        variants=(VariantSpec("main", "tiny", model, 1, 1.0),),
    )
    settings = Settings(home=tmp_path / "home", default_endpoint="ep")
    app = create_app(settings, source=InMemoryEndpointSource([spec]), poll_interval_s=0.05)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert app.state.router.wait_ready(10)
        answer = client.post("/slides", files={"slide": (name, slide.read_bytes())})
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 60
        described = client.get(f"/slides/{answer.json()['id']}").json()
        while described["status"] == "InProgress" and time.monotonic() < deadline:
            time.sleep(0.1)
            described = client.get(f"/slides/{answer.json()['id']}").json()
    assert described["status"] == "Completed", described.get("failure_reason")
    report = described["report"]
    assert (report["slide"]["format"], report["slide"]["levels"]) == expected
    assert report["slide"]["mpp"] == pytest.approx(SCAN_MPP)
    assert (report["analysis"]["rows"], report["analysis"]["cols"]) == (4, 6)
