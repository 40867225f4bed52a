"""Fixtures for slide tests: synthetic slides with a known IDC region, numpy classifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TISSUE = (220, 150, 200)  # pink H&E stroma
TUMOUR = (110, 50, 140)  # dark purple, dense nuclei
GLASS = (250, 250, 250)


def darkness_predict(tiles: np.ndarray) -> np.ndarray:
    """A numpy 'model': darker tiles are more likely IDC. ``(N,50,50,3)`` → ``(N,2)``."""
    brightness = tiles.astype(np.float32).mean(axis=(1, 2, 3)) / 255.0
    p_idc = np.clip((0.62 - brightness) * 4 + 0.5, 0.0, 1.0)
    return np.stack([1 - p_idc, p_idc], axis=1)


def synthetic_slide(rows: int = 12, cols: int = 16, seed: int = 0) -> np.ndarray:
    """A slide of ``rows x cols`` 50 px cells: glass border, tissue, tumour block.

    Tissue covers rows 2..rows-3 and cols 2..cols-3; the tumour (dark) covers
    rows 4..7 and cols 5..9 of the grid.
    """
    rng = np.random.default_rng(seed)
    image = np.empty((rows * 50, cols * 50, 3), dtype=np.uint8)
    image[:] = GLASS
    image[100 : (rows - 2) * 50, 100 : (cols - 2) * 50] = TISSUE
    image[200:400, 250:500] = TUMOUR
    noise = rng.integers(-6, 7, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def slide_image() -> np.ndarray:
    return synthetic_slide()


@pytest.fixture
def truth_map() -> np.ndarray:
    """The synthetic slide's ground truth on its 50 px grid."""
    truth = np.full((12, 16), -1, dtype=np.int8)
    truth[2:10, 2:14] = 0
    truth[4:8, 5:10] = 1
    return truth


@pytest.fixture(scope="session")
def scan_levels() -> list[np.ndarray]:
    """The synthetic 0.25 µm/px scan's pyramid (read-only; see ``scanner_files``)."""
    from tests.slides.scanner_files import scanner_levels

    levels = scanner_levels()
    for level in levels:
        level.setflags(write=False)
    return levels


@pytest.fixture(scope="session")
def scan_png(tmp_path_factory: pytest.TempPathFactory, scan_levels: list[np.ndarray]) -> Path:
    """The scan's level 0 as a PNG that records 0.25 µm/px."""
    from tests.slides.scanner_files import write_png

    return write_png(tmp_path_factory.mktemp("png") / "scan.png", scan_levels)


@pytest.fixture(scope="session")
def scan_tiff(tmp_path_factory: pytest.TempPathFactory, scan_levels: list[np.ndarray]) -> Path:
    """The scan as a generic pyramidal JPEG-tiled TIFF with resolution tags."""
    from tests.slides.scanner_files import write_pyramid_tiff

    return write_pyramid_tiff(tmp_path_factory.mktemp("tiff") / "scan.tif", scan_levels)


@pytest.fixture(scope="session")
def scan_svs(tmp_path_factory: pytest.TempPathFactory, scan_levels: list[np.ndarray]) -> Path:
    """The scan as an Aperio-style SVS (OpenSlide's ``aperio`` vendor)."""
    from tests.slides.scanner_files import write_svs

    return write_svs(tmp_path_factory.mktemp("svs") / "scan.svs", scan_levels)


@pytest.fixture(scope="session")
def scan_dicom(
    tmp_path_factory: pytest.TempPathFactory, scan_levels: list[np.ndarray]
) -> list[Path]:
    """The scan as a DICOM WSI series written by wsidicom: one file per level, level 0 first."""
    pytest.importorskip("wsidicom")
    from tests.slides.scanner_files import write_dicom

    return write_dicom(tmp_path_factory.mktemp("dicom") / "scan", scan_levels)
