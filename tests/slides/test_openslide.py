"""The OpenSlide reader on real files: pyramidal tiled TIFFs written with tifffile.

OpenSlide reads them as "generic-tiff" slides, taking the microns per pixel
from the TIFF resolution tags. Skipped when OpenSlide (``openslide-python``
and ``openslide-bin``, the ``slides`` extra) is not installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bcd.slides import (
    AnalysisOptions,
    ArraySlideReader,
    OpenSlideReader,
    analyze_file,
    analyze_slide,
    open_slide,
    plan_grid,
    read_tile,
)
from tests.slides.conftest import darkness_predict, synthetic_slide

try:
    import openslide  # noqa: F401 - only whether it loads matters
except (ImportError, OSError) as error:  # the package or its library is missing
    pytest.skip(f"OpenSlide is not installed ({error})", allow_module_level=True)


def _levels() -> list[np.ndarray]:
    """A 2 µm/px slide whose level 1 is the synthetic 4 µm/px slide, exactly."""
    model_view = synthetic_slide(12, 16, seed=3)  # 600 x 800, 50 px cells
    level0 = np.repeat(np.repeat(model_view, 2, axis=0), 2, axis=1)
    return [level0, model_view, np.ascontiguousarray(model_view[::2, ::2])]


def _write(path: Path, levels: list[np.ndarray], mpp: float | None) -> Path:
    """A tiled, zlib-compressed pyramid: full resolution first, reduced levels after."""
    options: dict[str, object] = {"tile": (128, 128), "compression": "zlib", "photometric": "rgb"}
    if mpp is not None:
        options |= {"resolution": (10_000 / mpp, 10_000 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as writer:
        writer.write(levels[0], **options)
        for level in levels[1:]:
            writer.write(level, subfiletype=1, **options)
    return path


@pytest.fixture
def levels() -> list[np.ndarray]:
    return _levels()


@pytest.fixture
def scanned(tmp_path: Path, levels: list[np.ndarray]) -> Path:
    return _write(tmp_path / "scanned.tif", levels, mpp=2.0)


@pytest.fixture
def unscaled(tmp_path: Path, levels: list[np.ndarray]) -> Path:
    return _write(tmp_path / "unscaled.tif", levels, mpp=None)


def test_levels_and_resolution_come_from_the_file(scanned: Path) -> None:
    with OpenSlideReader(str(scanned)) as reader:
        assert reader.format == "generic-tiff"
        assert reader.mpp == pytest.approx(2.0)
        assert reader.level_dimensions == ((1600, 1200), (800, 600), (400, 300))
        assert reader.level_downsamples == (1.0, 2.0, 4.0)


def test_the_level_nearest_the_model_resolution_is_read(scanned: Path) -> None:
    with OpenSlideReader(str(scanned)) as reader:
        grid = plan_grid(reader)
    assert (grid.level, grid.scale, grid.slide_mpp) == (1, 1.0, pytest.approx(2.0))
    assert grid.level0_per_model == 2.0 and not grid.notes
    assert (grid.rows, grid.cols) == (12, 16)


def test_without_a_resolution_the_model_resolution_is_assumed(unscaled: Path) -> None:
    with OpenSlideReader(str(unscaled)) as reader:
        assert reader.mpp is None
        grid = plan_grid(reader)
    assert (grid.level, grid.scale) == (0, 1.0)
    assert grid.notes and "records no microns-per-pixel; assumed 4 µm/px" in grid.notes[0]


def test_tiles_and_regions_are_the_source_pixels(scanned: Path, levels: list[np.ndarray]) -> None:
    with OpenSlideReader(str(scanned)) as reader:
        grid = plan_grid(reader)
        for row, col in [(0, 0), (4, 7), (11, 15)]:
            tile = read_tile(reader, grid, row, col)
            expected = levels[1][row * 50 : row * 50 + 50, col * 50 : col * 50 + 50]
            np.testing.assert_array_equal(tile, expected)
        np.testing.assert_array_equal(
            reader.read_region(30, 20, 90, 70, 2), levels[2][20:90, 30:120]
        )
        edge = reader.read_region(1550, 1150, 100, 100, 0)  # hangs over the corner
        np.testing.assert_array_equal(edge[:50, :50], levels[0][1150:, 1550:])
        assert (edge[50:] == 255).all() and (edge[:, 50:] == 255).all()


def test_a_whole_analysis_through_openslide(
    tmp_path: Path, scanned: Path, levels: list[np.ndarray], truth_map: np.ndarray
) -> None:
    slide = tmp_path / "case.svs"  # a whole-slide suffix: open_slide hands it to OpenSlide
    shutil.copy(scanned, slide)
    with open_slide(slide) as reader:
        assert isinstance(reader, OpenSlideReader)
        analysis = analyze_slide(reader, darkness_predict)
    reference = analyze_slide(ArraySlideReader(levels, mpp=2.0), darkness_predict)
    np.testing.assert_array_equal(analysis.tissue, reference.tissue)
    np.testing.assert_array_equal(analysis.probabilities, reference.probabilities)

    report = analyze_file(
        slide,
        darkness_predict,
        tmp_path / "out",
        AnalysisOptions(),
        truth=truth_map,
        truth_cell=100,
    )
    assert report["slide"]["format"] == "generic-tiff"
    assert report["slide"]["mpp_source"] == "file"
    assert report["ground_truth"]["auc"] > 0.9  # the dark block is the IDC region
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["slide"]["mpp"] == pytest.approx(2.0)
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 0


def test_an_aperio_svs_is_analysed_like_the_scan_in_memory(
    scan_svs: Path, scan_levels: list[np.ndarray]
) -> None:
    with open_slide(scan_svs) as reader:
        assert isinstance(reader, OpenSlideReader) and reader.format == "aperio"
        assert reader.mpp == pytest.approx(0.25)  # "|MPP = 0.25" in the description
        analysis = analyze_slide(reader, darkness_predict)
    reference = analyze_slide(ArraySlideReader(list(scan_levels), mpp=0.25), darkness_predict)
    assert analysis.grid.level == reference.grid.level == 2
    np.testing.assert_array_equal(analysis.tissue, reference.tissue)
    np.testing.assert_allclose(analysis.probabilities, reference.probabilities, atol=0.02)


def test_openslide_and_wsidicom_read_a_dicom_series_alike(scan_dicom: list[Path]) -> None:
    with (
        OpenSlideReader(str(scan_dicom[0])) as through_openslide,
        open_slide(scan_dicom[0]) as through_wsidicom,
    ):
        assert through_openslide.format == "dicom" and through_wsidicom.format == "dicom"
        assert through_openslide.level_dimensions == through_wsidicom.level_dimensions
        assert through_openslide.mpp == pytest.approx(through_wsidicom.mpp)
        for level in range(through_wsidicom.level_count):
            ours = through_wsidicom.read_region(200, 100, 300, 200, level).astype(np.int16)
            theirs = through_openslide.read_region(200, 100, 300, 200, level).astype(np.int16)
            assert np.abs(ours - theirs).max() <= 2  # two JPEG decoders
