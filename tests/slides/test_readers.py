"""Readers: one contract, every format; regions past the edge read as white glass."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from bcd.errors import DependencyMissingError, InvalidInputError, NotFoundError
from bcd.slides import ArraySlideReader, open_slide
from bcd.slides.readers import PillowSlideReader, TiffSlideReader


def _image(height: int = 300, width: int = 420) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _expected(image: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, np.uint8)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, image.shape[1]), min(y + h, image.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out


REGIONS = [
    (0, 0, 10, 10),
    (37, 61, 200, 150),
    (400, 280, 50, 50),
    (-20, -5, 60, 40),
    (500, 0, 5, 5),
]


def _tiff_files(tmp_path: Path, image: np.ndarray) -> dict[str, Path]:
    files = {
        "tiled-zlib": tmp_path / "tiled.tif",
        "strips": tmp_path / "strips.tif",
        "flat": tmp_path / "flat.tif",
    }
    tifffile.imwrite(files["tiled-zlib"], image, tile=(64, 64), compression="zlib")
    tifffile.imwrite(files["strips"], image, rowsperstrip=32, compression="zlib")
    tifffile.imwrite(files["flat"], image)
    return files


@pytest.mark.parametrize("kind", ["tiled-zlib", "strips", "flat"])
def test_tiff_regions_match_the_image(tmp_path: Path, kind: str) -> None:
    image = _image()
    with TiffSlideReader(str(_tiff_files(tmp_path, image)[kind])) as reader:
        assert reader.dimensions == (420, 300)
        for x, y, w, h in REGIONS:
            np.testing.assert_array_equal(
                reader.read_region(x, y, w, h), _expected(image, x, y, w, h)
            )


def test_tiff_pyramid_levels_and_mpp(tmp_path: Path) -> None:
    image = _image(256, 512)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(
            image, tile=(64, 64), resolution=(4000, 4000), resolutionunit="CENTIMETER", subifds=1
        )
        writer.write(image[::4, ::4], tile=(64, 64), subfiletype=1)
    reader = open_slide(path)
    assert isinstance(reader, TiffSlideReader)
    assert reader.level_dimensions == ((512, 256), (128, 64))
    assert reader.level_downsamples == (1.0, 4.0)
    assert reader.mpp == pytest.approx(2.5)  # 10,000 µm / 4,000 px per cm
    np.testing.assert_array_equal(reader.read_region(0, 0, 128, 64, level=1), image[::4, ::4])
    thumbnail, downsample = reader.thumbnail(128)
    assert thumbnail.shape == (64, 128, 3) and downsample == pytest.approx(4.0)


def test_array_reader_regions_and_level_errors() -> None:
    image = _image()
    reader = ArraySlideReader(image, mpp=0.5)
    for x, y, w, h in REGIONS:
        np.testing.assert_array_equal(reader.read_region(x, y, w, h), _expected(image, x, y, w, h))
    with pytest.raises(InvalidInputError, match="level 3 does not exist"):
        reader.read_region(0, 0, 5, 5, level=3)
    with pytest.raises(InvalidInputError, match="empty"):
        reader.read_region(0, 0, 0, 5)
    with pytest.raises(InvalidInputError, match="largest first"):
        ArraySlideReader([image[::2, ::2], image])


def test_alpha_is_composited_on_white_and_grey_is_expanded() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    assert (ArraySlideReader(rgba).read_region(0, 0, 4, 4) == 255).all()
    grey = np.full((4, 4), 77, dtype=np.uint8)
    assert (ArraySlideReader(grey).read_region(0, 0, 4, 4) == 77).all()


def test_png_mpp_from_microscope_dpi_only(tmp_path: Path) -> None:
    image = _image(60, 80)
    scanned, screen = tmp_path / "scanned.png", tmp_path / "screen.png"
    Image.fromarray(image).save(scanned, dpi=(6350, 6350))  # 4 µm/px
    Image.fromarray(image).save(screen, dpi=(72, 72))
    assert PillowSlideReader(str(scanned)).mpp == pytest.approx(4.0, rel=1e-3)
    assert PillowSlideReader(str(screen)).mpp is None
    np.testing.assert_array_equal(open_slide(screen).read_region(0, 0, 80, 60), image)


def test_format_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    Image.fromarray(_image(20, 20)).save(path, format="JPEG")
    assert open_slide(path).format == "jpeg"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, not an image", "not an image bcd can read"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "could not be decoded"),
        (b"II*\x00" + b"\x00" * 40, "could not be read as a TIFF"),
    ],
    ids=["text", "truncated-png", "truncated-tiff"],
)
def test_bad_files_give_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "slide.png"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        open_slide(path)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        open_slide(tmp_path / "nope.tif")


def test_wsi_format_without_openslide_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "case.svs"
    path.write_bytes(b"II*\x00")
    monkeypatch.setitem(sys.modules, "openslide", None)  # makes `import openslide` fail
    with pytest.raises(DependencyMissingError, match=r"bcd\[slides\]"):
        open_slide(path)


def test_openslide_reader_adapts_levels_mpp_and_alpha(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels = [_image(200, 400), _image(200, 400)[::4, ::4]]
    calls = []

    class FakeSlide:
        level_dimensions = ((400, 200), (100, 50))
        level_downsamples = (1.0, 4.0)

        def __init__(self, path: str) -> None:
            self.path = path
            self.properties = {"openslide.mpp-x": "0.2500", "openslide.vendor": "aperio"}

        def read_region(self, location, level, size):  # type: ignore[no-untyped-def]
            calls.append((location, level, size))
            x, y = (
                location[0] // int(self.level_downsamples[level]),
                location[1] // int(self.level_downsamples[level]),
            )
            w, h = size
            rgba = np.zeros((h, w, 4), dtype=np.uint8)
            rgba[..., :3] = levels[level][y : y + h, x : x + w]
            rgba[..., 3] = 255
            return Image.fromarray(rgba, "RGBA")

        def close(self) -> None:
            pass

    fake = types.SimpleNamespace(
        OpenSlide=FakeSlide, OpenSlideError=OSError, PROPERTY_NAME_MPP_X="openslide.mpp-x"
    )
    monkeypatch.setitem(sys.modules, "openslide", fake)
    path = tmp_path / "case.svs"
    path.write_bytes(b"")
    reader = open_slide(path)
    assert reader.format == "aperio"
    assert reader.mpp == 0.25
    assert reader.level_downsamples == (1.0, 4.0)
    region = reader.read_region(10, 5, 20, 10, level=1)
    np.testing.assert_array_equal(region, levels[1][5:15, 10:30])
    assert calls[-1] == ((40, 20), 1, (20, 10))  # level-0 location, as OpenSlide wants
