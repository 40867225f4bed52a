"""A DICOM WSI series uploaded as a zip: unpacked safely, or refused with nothing left behind."""

from __future__ import annotations

import io
import json
import stat
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bcd.config import Settings
from bcd.errors import (
    ArchiveTooLargeError,
    InvalidArchiveError,
    PayloadTooLargeError,
    UnsafeArchiveError,
)
from bcd.serving import EndpointSpec, InMemoryEndpointSource, VariantSpec, create_app
from bcd.slides import open_slide
from bcd.slides._archives import ArchiveLimits, _copy, extract_dicom_series
from bcd.testing.models import write_tiny_model
from tests.slides.scanner_files import SCAN_MPP, SCAN_SIZE

pytest.importorskip("wsidicom")

ROOMY = ArchiveLimits(max_entries=100, max_bytes=64 * 1024**2)


def _zip(path: Path, entries: dict[str, bytes | Path]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, content in entries.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            bundle.writestr(name, data)
    return path


def _series_entries(files: list[Path], prefix: str = "case-17/") -> dict[str, bytes | Path]:
    return {f"{prefix}level-{index}.dcm": path for index, path in enumerate(files)}


@pytest.fixture(scope="module")
def series_zip(tmp_path_factory: pytest.TempPathFactory, scan_dicom: list[Path]) -> Path:
    """The scan's three level files in a sub-folder, plus files that are not DICOM."""
    entries = _series_entries(scan_dicom)
    entries["case-17/README.txt"] = b"scanned 2026-11-02"
    entries["__MACOSX/case-17/._level-0.dcm"] = b"\x00\x05\x16\x07 resource fork"
    return _zip(tmp_path_factory.mktemp("zips") / "case-17.zip", entries)


def test_a_zipped_series_unpacks_into_one_flat_folder_of_its_dicom_files(
    series_zip: Path, tmp_path: Path
) -> None:
    folder = extract_dicom_series(series_zip, tmp_path / "series", ROOMY)
    assert sorted(path.name for path in folder.iterdir()) == [
        "00000.dcm",
        "00001.dcm",
        "00002.dcm",
    ]
    with open_slide(folder) as reader:
        assert reader.format == "dicom"
        assert reader.level_dimensions[0] == SCAN_SIZE and len(reader.level_dimensions) == 3
        assert reader.mpp == pytest.approx(SCAN_MPP)


def _rewrite_uid(source: Path, target: Path) -> Path:
    """A copy of a level file that belongs to another series."""
    import pydicom
    from pydicom.uid import generate_uid

    dataset = pydicom.dcmread(source)
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.save_as(target)
    return target


def _ct_image(target: Path) -> Path:
    """A DICOM file that is not a whole-slide image (a CT slice)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "CT"
    dataset.save_as(target, enforce_file_format=True)
    return target


def _symlink_zip(path: Path) -> Path:
    link = zipfile.ZipInfo("level-0.dcm")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr(link, "/etc/passwd")
    return path


def _patched_central_directory(path: Path, offset: int, patch: Callable[[bytes], bytes]) -> Path:
    """Rewrite a field of the (only) central directory entry of a small zip."""
    data = bytearray(path.read_bytes())
    start = data.rindex(b"PK\x01\x02")
    field = slice(start + offset, start + offset + 4)
    data[field] = patch(bytes(data[field]))
    path.write_bytes(bytes(data))
    return path


def _encrypted_zip(path: Path) -> Path:
    _zip(path, {"level-0.dcm": b"\x00" * 128 + b"DICM" + b"\x00" * 64})
    # The general purpose flags (offset 8, 2 bytes): bit 0 says encrypted.
    return _patched_central_directory(path, 8, lambda field: bytes([field[0] | 0x01]) + field[1:])


def _understated_zip(path: Path) -> Path:
    """An entry whose declared size is 200 bytes while it holds 100 kB."""
    _zip(path, {"level-0.dcm": b"\x00" * 128 + b"DICM" + bytes(100_000)})
    # The uncompressed size (offset 24, 4 bytes).
    return _patched_central_directory(path, 24, lambda _: struct.pack("<I", 200))


REFUSALS: dict[str, tuple[Callable[[Path, list[Path]], Path], type[Exception], str]] = {
    "not-a-zip": (
        lambda path, _: path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500)) and path,
        InvalidArchiveError,
        "not a readable zip archive",
    ),
    "cut-short": (
        lambda path, files: (
            path.write_bytes(_zip(path, _series_entries(files)).read_bytes()[:300_000]) and path
        ),
        InvalidArchiveError,
        "not a readable zip archive",
    ),
    "absolute-path": (
        lambda path, files: _zip(path, {"/tmp/level-0.dcm": files[0]}),
        UnsafeArchiveError,
        "absolute path",
    ),
    "windows-drive": (
        lambda path, files: _zip(path, {"C:\\slides\\level-0.dcm": files[0]}),
        UnsafeArchiveError,
        "absolute path",
    ),
    "dot-dot": (
        lambda path, files: _zip(path, {"case/../../level-0.dcm": files[0]}),
        UnsafeArchiveError,
        "climbs out",
    ),
    "symlink": (lambda path, _: _symlink_zip(path), UnsafeArchiveError, "symbolic link"),
    "encrypted": (lambda path, _: _encrypted_zip(path), InvalidArchiveError, "encrypted"),
    "too-many-entries": (
        lambda path, files: _zip(path, {f"{index}.txt": b"x" for index in range(101)}),
        ArchiveTooLargeError,
        "101 entries",
    ),
    "declares-too-much": (
        lambda path, _: _zip(path, {"level-0.dcm": bytes(65 * 1024**2)}),
        ArchiveTooLargeError,
        "declares 68,157,440 bytes",
    ),
    "size-that-lies": (lambda path, _: _understated_zip(path), InvalidArchiveError, "damaged"),
    "no-dicom": (
        lambda path, _: _zip(path, {"slide.png": b"\x89PNG\r\n\x1a\n", "notes.txt": b"hello"}),
        InvalidArchiveError,
        "holds no DICOM files",
    ),
    "not-a-whole-slide": (
        lambda path, _: _zip(path, {"ct.dcm": _ct_image(path.with_suffix(".dcm"))}),
        InvalidArchiveError,
        "no DICOM whole-slide image",
    ),
    "mixed-series": (
        lambda path, files: _zip(
            path,
            {
                **_series_entries(files),
                "other/level-0.dcm": _rewrite_uid(files[0], path.with_suffix(".dcm")),
            },
        ),
        InvalidArchiveError,
        "mixes 2 DICOM series",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_unsafe_or_unusable_archives_are_refused_and_leave_nothing(
    case: str, tmp_path: Path, scan_dicom: list[Path]
) -> None:
    make, error, message = REFUSALS[case]
    archive = make(tmp_path / "upload.zip", scan_dicom)
    with pytest.raises(error, match=message):
        extract_dicom_series(archive, tmp_path / "out" / "series", ROOMY)
    assert not (tmp_path / "out" / "series").exists()
    assert not (tmp_path / "tmp").exists() and not (tmp_path.parent / "level-0.dcm").exists()


def test_bytes_are_counted_while_unpacking_whatever_was_declared(tmp_path: Path) -> None:
    limits = ArchiveLimits(max_entries=10, max_bytes=3 * 1024**2)
    with pytest.raises(ArchiveTooLargeError, match="unpacks to more bytes"):
        _copy(io.BytesIO(bytes(4 * 1024**2)), b"", tmp_path / "out.dcm", 0, limits, "x")
    assert _copy(io.BytesIO(bytes(1000)), b"head", tmp_path / "ok.dcm", 10, limits, "x") == 1014


def test_archive_limits_follow_the_upload_limit(tmp_path: Path) -> None:
    assert issubclass(ArchiveTooLargeError, PayloadTooLargeError)
    settings = Settings(home=tmp_path, max_slide_bytes=10_000)
    assert ArchiveLimits.from_settings(settings) == ArchiveLimits(1000, 20_000)
    settings = Settings(home=tmp_path, max_archive_entries=5, max_archive_bytes=123)
    assert ArchiveLimits.from_settings(settings) == ArchiveLimits(5, 123)


# -- POST /slides and the CLI ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def client(tmp_path: Path, tiny_model: Path) -> Iterator[TestClient]:
    spec = EndpointSpec(
        name="ep",
        status="InService",
        config_name="ep-config",
        version=1,
        variants=(VariantSpec("main", "tiny", tiny_model, 1, 1.0),),
    )
    settings = Settings(home=tmp_path / "home", default_endpoint="ep", max_archive_entries=50)
    app = create_app(settings, source=InMemoryEndpointSource([spec]), poll_interval_s=0.05)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert app.state.router.wait_ready(10)
        yield client


def _wait(client: TestClient, analysis_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    described = client.get(f"/slides/{analysis_id}").json()
    while described["status"] == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.1)
        described = client.get(f"/slides/{analysis_id}").json()
    return described


@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_a_zipped_series_uploaded_to_post_slides(
    client: TestClient, series_zip: Path, tmp_path: Path, how: str
) -> None:
    body = series_zip.read_bytes()
    if how == "multipart":
        answer = client.post("/slides", files={"slide": ("case-17.zip", body)})
    else:
        answer = client.post(
            "/slides?filename=case-17.zip",
            content=body,
            headers={"Content-Type": "application/zip"},
        )
    assert answer.status_code == 202, answer.text
    analysis_id = answer.json()["id"]
    described = _wait(client, analysis_id)
    assert described["status"] == "Completed", described.get("failure_reason")
    assert described["filename"] == "case-17.zip"
    report = described["report"]
    assert (report["slide"]["format"], report["slide"]["levels"]) == ("dicom", 3)
    assert report["slide"]["mpp"] == pytest.approx(SCAN_MPP)
    assert (report["analysis"]["rows"], report["analysis"]["cols"]) == (4, 6)
    tile = client.get(f"/slides/{analysis_id}/tiles/1/2.png")
    assert tile.status_code == 200 and tile.content.startswith(b"\x89PNG")
    assert client.get(f"/slides/{analysis_id}/dzi").status_code == 200
    home = tmp_path / "home" / "slides"
    assert list((home / ".uploads").iterdir()) == []
    assert sorted(path.name for path in (home / analysis_id / "slide").iterdir()) == [
        "00000.dcm",
        "00001.dcm",
        "00002.dcm",
    ]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("not-a-zip", 400, "invalid_archive"),
        ("dot-dot", 400, "unsafe_archive"),
        ("symlink", 400, "unsafe_archive"),
        ("encrypted", 400, "invalid_archive"),
        ("too-many-entries", 413, "archive_too_large"),
        ("mixed-series", 400, "invalid_archive"),
    ],
)
def test_bad_archives_are_refused_by_post_slides_with_nothing_staged(
    client: TestClient,
    tmp_path: Path,
    scan_dicom: list[Path],
    case: str,
    status: int,
    code: str,
) -> None:
    archive = REFUSALS[case][0](tmp_path / "upload.zip", scan_dicom)
    answer = client.post(
        "/slides", files={"slide": ("upload.zip", archive.read_bytes(), "application/zip")}
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert "upload.zip" in answer.json()["error"]["message"]
    home = tmp_path / "home" / "slides"
    assert list((home / ".uploads").iterdir()) == []
    assert [path.name for path in home.iterdir()] == [".uploads"]
    assert client.get("/slides").json()["slides"] == []


def test_a_zip_is_recognised_by_its_bytes_whatever_its_name(
    client: TestClient, tmp_path: Path, scan_dicom: list[Path]
) -> None:
    archive = REFUSALS["dot-dot"][0](tmp_path / "upload.zip", scan_dicom)
    answer = client.post("/slides", files={"slide": ("case.svs", archive.read_bytes())})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unsafe_archive"


def test_slide_analyze_reads_a_zipped_series(
    series_zip: Path, tiny_model: Path, tmp_path: Path, scan_dicom: list[Path]
) -> None:
    from typer.testing import CliRunner

    from bcd.cli.main import build_app

    out = tmp_path / "out"
    arguments = ["slide", "analyze", str(series_zip), "--model-dir", str(tiny_model)]
    result = CliRunner().invoke(build_app(), [*arguments, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert (report["slide"]["format"], report["slide"]["levels"]) == ("dicom", 3)
    assert report["source"]["filename"] == "case-17.zip"
    assert report["source"]["size_bytes"] == sum(path.stat().st_size for path in scan_dicom)
    assert np.load(out / "probabilities.npy").shape == (4, 6)

    unsafe = REFUSALS["dot-dot"][0](tmp_path / "unsafe.zip", scan_dicom)
    result = CliRunner().invoke(build_app(), ["slide", "analyze", str(unsafe), "-o", str(out)])
    assert result.exit_code == 2 and "climbs out of its folder" in result.output
