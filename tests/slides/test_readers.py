"""Readers: one contract, every format; regions past the edge read as white glass."""

from __future__ import annotations

import io
import re
import shutil
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from bcd.errors import DependencyMissingError, InvalidInputError, NotFoundError
from bcd.slides import ArraySlideReader, open_slide
from bcd.slides.readers import DicomSlideReader, PillowSlideReader, TiffSlideReader
from tests.slides.scanner_files import write_dicom


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


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width × height`` but holds a few bytes of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )  # fmt: skip


def jpeg_declaring(width: int, height: int) -> bytes:
    """A 16×16 JPEG whose frame header (SOF0) is rewritten to ``width × height``."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    """A 16×16 uncompressed TIFF whose ImageWidth and ImageLength tags are rewritten."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.full((16, 16, 3), 200, np.uint8))
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        tags = tiff.pages.first.tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tags[name]
            assert tag.dtype == 4  # LONG: any 32-bit size fits
            data[tag.valueoffset : tag.valueoffset + 4] = struct.pack("<I", value)
    return bytes(data)


def truncated_tiff(keep: float = 0.5) -> bytes:
    """The first ``keep`` of a tiled, compressed TIFF (from 0.5: its header intact)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _image(300, 300), tile=(64, 64), compression="zlib")
    data = buffer.getvalue()
    return data[: int(len(data) * keep)]


BIG = 2**32 - 1
#: (id, file suffix, bytes, what the failure reason says)
DAMAGED_SLIDES = [
    ("png-0x0", ".png", png_declaring(0, 0), "the PNG declares 0×0 pixels"),
    ("png-100000²", ".png", png_declaring(100_000, 100_000),
     "the PNG declares 100000×100000 pixels, which its 68 bytes cannot hold"),
    ("png-2³²−1", ".png", png_declaring(BIG, BIG), "more than any slide scan"),
    ("jpeg-0x0", ".jpg", jpeg_declaring(0, 0), "the JPEG declares 0×0 pixels"),
    ("jpeg-0-high", ".jpg", jpeg_declaring(50, 0), "the JPEG declares 50×0 pixels"),
    ("jpeg-65535²", ".jpg", jpeg_declaring(65535, 65535), "bytes cannot hold"),
    ("tiff-0x0", ".tif", tiff_declaring(0, 0), "the TIFF declares 0×0 pixels"),
    ("tiff-100000²", ".tif", tiff_declaring(100_000, 100_000),
     "the TIFF declares 100000×100000 pixels, which its"),
    ("tiff-2³²−1", ".tif", tiff_declaring(BIG, BIG), "more than any slide scan"),
    ("tiff-2³²−1-wide", ".tif", tiff_declaring(BIG, 1), "4294967295×1 pixels"),
    ("tiff-truncated", ".tif", truncated_tiff(), "is truncated: its TIFF pixel data runs to"),
    ("tiff-truncated-header", ".tif", truncated_tiff(0.0002), "could not be read as a TIFF"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("suffix", "content", "reason"),
    [case[1:] for case in DAMAGED_SLIDES],
    ids=[case[0] for case in DAMAGED_SLIDES],
)
def test_impossible_headers_fail_with_a_reason(
    tmp_path: Path, suffix: str, content: bytes, reason: str
) -> None:
    path = tmp_path / f"case{suffix}"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=re.escape(reason)) as caught:
        open_slide(path)
    assert str(path) in caught.value.message  # the service swaps in the upload's name


def test_array_slides_need_pixels() -> None:
    with pytest.raises(InvalidInputError, match="at least one pixel"):
        ArraySlideReader(np.zeros((0, 0, 3), np.uint8))


@pytest.mark.parametrize(
    ("dimensions", "reason"),
    [(((0, 0),), "the slide declares 0×0 pixels"),
     (((BIG, BIG), (100, 50)), "4294967295×4294967295 pixels, more than any slide scan")],
    ids=["0x0", "2³²−1"],
)  # fmt: skip
def test_openslide_files_with_impossible_sizes_fail_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dimensions: tuple, reason: str
) -> None:
    closed = []

    class FakeSlide:
        level_dimensions = dimensions
        level_downsamples = tuple(1.0 for _ in dimensions)

        def __init__(self, path: str) -> None:
            self.properties: dict[str, str] = {}

        def close(self) -> None:
            closed.append(True)

    fake = types.SimpleNamespace(OpenSlide=FakeSlide, OpenSlideError=OSError)
    monkeypatch.setitem(sys.modules, "openslide", fake)
    path = tmp_path / "case.svs"
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match=re.escape(reason)):
        open_slide(path)
    assert closed == [True]


def test_openslide_read_errors_are_invalid_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class SlideError(Exception):
        pass

    class FakeSlide:
        level_dimensions = ((400, 200),)
        level_downsamples = (1.0,)

        def __init__(self, path: str) -> None:
            self.properties: dict[str, str] = {}

        def read_region(self, location, level, size):  # type: ignore[no-untyped-def]
            raise SlideError("TIFFReadEncodedTile failed")

        def close(self) -> None:
            pass

    fake = types.SimpleNamespace(OpenSlide=FakeSlide, OpenSlideError=SlideError)
    monkeypatch.setitem(sys.modules, "openslide", fake)
    path = tmp_path / "case.svs"
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="may be truncated or damaged"):
        open_slide(path).read_region(0, 0, 50, 50)


@pytest.mark.parametrize(
    ("suffix", "content", "reason"),
    [DAMAGED_SLIDES[0][1:], DAMAGED_SLIDES[5][1:], DAMAGED_SLIDES[10][1:]],
    ids=["png-0x0", "jpeg-65535²", "tiff-truncated"],
)
def test_slide_analyze_exits_with_the_invalid_input_code(
    tmp_path: Path, suffix: str, content: bytes, reason: str
) -> None:
    from typer.testing import CliRunner

    from bcd.cli.main import EXIT_CODES, build_app
    from bcd.testing.models import write_tiny_model

    path = tmp_path / f"case{suffix}"
    path.write_bytes(content)
    model = write_tiny_model(tmp_path / "model")
    arguments = ["slide", "analyze", str(path), "--model-dir", str(model), "--out", str(tmp_path)]
    result = CliRunner().invoke(build_app(), arguments)
    assert result.exit_code == EXIT_CODES[InvalidInputError], result.output
    assert reason in " ".join(result.output.split())
    assert "Traceback" not in result.output


def _series_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def test_dicom_is_sniffed_not_taken_from_the_name(tmp_path: Path, scan_dicom: list[Path]) -> None:
    upload = tmp_path / "upload.bin"  # one file alone: its own level only
    upload.write_bytes(scan_dicom[0].read_bytes())
    with open_slide(upload) as reader:
        assert isinstance(reader, DicomSlideReader)
        assert reader.level_dimensions == ((4096, 3072),)
        assert reader.mpp == pytest.approx(0.25)


def test_any_file_of_a_dicom_series_opens_the_whole_series(
    tmp_path: Path, scan_dicom: list[Path], scan_levels: list[np.ndarray]
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    for index, path in enumerate(scan_dicom):
        shutil.copy(path, folder / f"level-{index}.dcm")
    # A second, smaller slide in the same folder: its level 0 is 1024x768.
    for index, path in enumerate(write_dicom(tmp_path / "other", scan_levels[1:])):
        shutil.copy(path, folder / f"other-{index}.dcm")
    assert _series_of(folder / "other-0.dcm") != _series_of(folder / "level-0.dcm")
    expected = ((4096, 3072), (1024, 768), (256, 192))
    with open_slide(folder / "level-2.dcm") as reader:
        assert reader.level_dimensions == expected
        assert reader.level_downsamples == (1.0, 4.0, 16.0)
    with open_slide(folder / "other-1.dcm") as reader:
        assert reader.level_dimensions == ((1024, 768), (256, 192))
        assert reader.level_downsamples == (1.0, 4.0)


def test_a_folder_of_dicom_files_opens_as_a_slide(scan_dicom: list[Path]) -> None:
    with open_slide(scan_dicom[0].parent) as reader:
        assert reader.format == "dicom" and reader.level_count == 3


def test_a_folder_without_dicom_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no slide here")
    with pytest.raises(InvalidInputError, match="a folder without DICOM files"):
        open_slide(tmp_path)


def test_dicom_without_wsidicom_says_how_to_install(
    tmp_path: Path, scan_dicom: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wsidicom", None)
    with pytest.raises(DependencyMissingError, match=r"wsidicom.*bcd\[slides\]"):
        open_slide(scan_dicom[0])


@pytest.mark.parametrize(
    ("keep", "reason"),
    [
        (0.5, "is truncated or damaged: the pixel data of its DICOM level 0 (4096×3072)"),
        (0.001, "could not be opened as a DICOM whole slide"),
    ],
    ids=["half", "header-only"],
)
def test_a_cut_dicom_file_fails_when_opened(
    tmp_path: Path, scan_dicom: list[Path], keep: float, reason: str
) -> None:
    data = scan_dicom[0].read_bytes()
    path = tmp_path / "case.dcm"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InvalidInputError, match=re.escape(reason)) as caught:
        open_slide(path)
    assert str(path) in caught.value.message


def test_a_dicom_file_that_is_not_a_whole_slide_is_invalid_input(tmp_path: Path) -> None:
    pytest.importorskip("wsidicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    dataset.SOPInstanceUID = dataset.SeriesInstanceUID = generate_uid()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = tmp_path / "ct.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidInputError, match="could not be opened as a DICOM whole slide"):
        open_slide(path)
