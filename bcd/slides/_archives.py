"""A DICOM whole-slide series uploaded as one zip: checked, then unpacked into one folder.

A DICOM WSI is a series of files (one per pyramid level, plus label and
overview images), so ``POST /slides``, the web app and ``bcd slide analyze``
take it zipped. An archive is untrusted input, so before anything is written:

- it must open as a zip (``invalid_archive``);
- no entry may name an absolute path or hold a ``..`` part, and none may be a
  symbolic link or another special file (``unsafe_archive``);
- no entry may be encrypted (``invalid_archive``);
- it may hold at most ``BCD_MAX_ARCHIVE_ENTRIES`` entries, and the sizes its
  entries declare may add up to at most ``BCD_MAX_ARCHIVE_BYTES``
  (``archive_too_large``, 413).

Then only the entries that start like a DICOM file (``DICM`` after the
preamble) are unpacked, under names of our own (``00000.dcm``, …) in one flat
folder, so an entry's name never becomes a path; the bytes are counted while
they are written, and unpacking stops at the limit whatever the entries
declared. Last, the files must hold one VL Whole Slide Microscopy series
(its label and overview images may come from another series and are dropped):
none (``invalid_archive``: no DICOM WSI inside) or several (mixed series) is
refused. On any refusal the folder is deleted.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from bcd.config import Settings
from bcd.errors import ArchiveTooLargeError, InvalidArchiveError, UnsafeArchiveError
from bcd.slides.readers._dicom import DICOM_MAGIC_OFFSET, import_wsidicom

logger = logging.getLogger(__name__)

#: The first bytes of a zip archive: a local file header, or the end record of an empty one.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
#: Content types a client may send a zip under.
ZIP_MEDIA_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
#: SOP Class UID of VL Whole Slide Microscopy Image Storage.
VL_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_CHUNK = 1 << 20
_HEAD = DICOM_MAGIC_OFFSET + 4
# Image types (value 3 of ImageType) that are not part of the pyramid.
_ASIDE = frozenset({"LABEL", "OVERVIEW"})


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may hold.

    Attributes:
        max_entries: Entries (files and folders) in the archive.
        max_bytes: Bytes its entries unpack to, declared and counted.
    """

    max_entries: int
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        """``BCD_MAX_ARCHIVE_ENTRIES``, ``BCD_MAX_ARCHIVE_BYTES`` (default: 2 × upload limit)."""
        return cls(settings.max_archive_entries, settings.resolved_max_archive_bytes)


def is_zip_name(filename: str | None) -> bool:
    """Whether a file name says zip (``*.zip``, any case)."""
    return bool(filename) and str(filename).lower().endswith(".zip")


def looks_like_zip(path: str | Path) -> bool:
    """Whether a file starts like a zip archive."""
    with open(path, "rb") as handle:
        return handle.read(4) in ZIP_MAGIC


def extract_dicom_series(
    archive: str | Path, folder: str | Path, limits: ArchiveLimits, name: str = "the archive"
) -> Path:
    """Check a zipped DICOM WSI series and unpack its DICOM files into ``folder``.

    Args:
        archive: The zip file.
        folder: Where the series goes; created, and must not exist yet.
        limits: Most entries and unpacked bytes.
        name: The archive as its owner knows it, for messages.

    Returns:
        ``folder``, holding the series' DICOM files and nothing else.

    Raises:
        DependencyMissingError: Without wsidicom (``bcd[slides]``), checked first.
        InvalidArchiveError: Not a zip, a damaged or encrypted entry, no DICOM
            WSI inside, or more than one series.
        UnsafeArchiveError: An absolute path, a ``..`` part, a link or a special file.
        ArchiveTooLargeError: Over ``limits``.
    """
    import_wsidicom()  # and with it pydicom, which reads the series' headers
    folder = Path(folder)
    folder.mkdir(parents=True)
    try:
        with _open_zip(archive, name) as bundle:
            entries = _checked_entries(bundle, limits, name)
            written = _unpack(bundle, entries, folder, limits, name)
        if not written:
            raise InvalidArchiveError(
                f"{name} holds no DICOM files; zip the .dcm files of one whole-slide series"
            )
        _keep_one_series(written, name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _open_zip(archive: str | Path, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as error:
        raise InvalidArchiveError(
            f"{name} is not a readable zip archive ({error}); zip the slide's DICOM files "
            "again and upload the whole .zip"
        ) from error


def _checked_entries(
    bundle: zipfile.ZipFile, limits: ArchiveLimits, name: str
) -> list[zipfile.ZipInfo]:
    """The archive's file entries, after every check that needs no decompression."""
    entries = bundle.infolist()
    if len(entries) > limits.max_entries:
        raise ArchiveTooLargeError(
            f"{name} holds {len(entries):,} entries, more than the {limits.max_entries:,} "
            "allowed (BCD_MAX_ARCHIVE_ENTRIES); zip one slide's series only"
        )
    declared = 0
    for entry in entries:
        _check_name(entry.filename, name)
        kind = stat.S_IFMT(entry.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(
                f"{name} holds a symbolic link ({entry.filename!r}); zip the files themselves"
            )
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"{name} holds a special file ({entry.filename!r})")
        if entry.flag_bits & 0x1:
            raise InvalidArchiveError(
                f"{name} is encrypted ({entry.filename!r}); zip the series without a password"
            )
        declared += entry.file_size
    if declared > limits.max_bytes:
        raise ArchiveTooLargeError(_over_bytes(name, f"declares {declared:,} bytes", limits))
    return [entry for entry in entries if not entry.is_dir()]


def _check_name(filename: str, name: str) -> None:
    """Refuse an entry name that points outside the folder it would be unpacked into."""
    parts = PurePosixPath(filename.replace("\\", "/"))
    drive = len(filename) >= 2 and filename[1] == ":" and filename[0].isalpha()
    if filename.startswith(("/", "\\")) or drive or parts.is_absolute():
        raise UnsafeArchiveError(
            f"{name} holds an entry with an absolute path ({filename!r}); zip with relative paths"
        )
    if ".." in parts.parts:
        raise UnsafeArchiveError(
            f"{name} holds an entry that climbs out of its folder ({filename!r}, '..')"
        )


def _over_bytes(name: str, what: str, limits: ArchiveLimits) -> str:
    return (
        f"{name} {what}, more than the {limits.max_bytes / 1024**3:.2f} GB allowed unpacked "
        "(BCD_MAX_ARCHIVE_BYTES); zip one slide's series only"
    )


def _unpack(
    bundle: zipfile.ZipFile,
    entries: list[zipfile.ZipInfo],
    folder: Path,
    limits: ArchiveLimits,
    name: str,
) -> list[Path]:
    """Write the entries that start like DICOM files, counting every byte unpacked."""
    written: list[Path] = []
    total = 0
    for index, entry in enumerate(entries):
        try:
            with bundle.open(entry) as source:
                head = source.read(_HEAD)
                if head[DICOM_MAGIC_OFFSET:] != b"DICM":
                    continue  # a README, a DICOMDIR's companions, macOS metadata, …
                target = folder / f"{index:05d}.dcm"
                total = _copy(source, head, target, total, limits, name)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as error:
            raise InvalidArchiveError(
                f"{name} is damaged: entry {entry.filename!r} cannot be unpacked ({error}); "
                "zip the slide's DICOM files again"
            ) from error
        written.append(target)
    return written


def _copy(
    source: IO[bytes], head: bytes, target: Path, total: int, limits: ArchiveLimits, name: str
) -> int:
    """Copy one entry to ``target``; the running total of bytes unpacked."""
    with open(target, "wb") as handle:
        for chunk in itertools.chain([head], iter(lambda: source.read(_CHUNK), b"")):
            total += len(chunk)
            if total > limits.max_bytes:
                raise ArchiveTooLargeError(_over_bytes(name, "unpacks to more bytes", limits))
            handle.write(chunk)
    return total


def _keep_one_series(files: list[Path], name: str) -> None:
    """Keep the files of the one whole-slide series; refuse none or several."""
    import pydicom

    series: dict[str, list[Path]] = {}
    aside: list[Path] = []
    for path in files:
        try:
            header = pydicom.dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["SOPClassUID", "SeriesInstanceUID", "ImageType"],
            )
        except Exception as error:  # pydicom raises many types for files it cannot parse
            raise InvalidArchiveError(
                f"{name} holds a damaged DICOM file ({error or type(error).__name__}); zip "
                "the slide's DICOM files again"
            ) from error
        if str(header.get("SOPClassUID", "")) != VL_WSI_SOP_CLASS:
            aside.append(path)  # a DICOMDIR, an annotation or another kind of image
            continue
        image_type = [str(value).upper() for value in (header.get("ImageType") or [])]
        uid = str(header.get("SeriesInstanceUID") or "")
        if len(image_type) > 2 and image_type[2] in _ASIDE:
            series.setdefault(f"aside:{uid}", []).append(path)
        else:
            series.setdefault(uid, []).append(path)
    pyramids = [uid for uid in series if not uid.startswith("aside:")]
    if not pyramids:
        raise InvalidArchiveError(
            f"{name} holds no DICOM whole-slide image (VL Whole Slide Microscopy); zip the "
            "series a slide scanner or converter wrote"
        )
    if len(pyramids) > 1:
        raise InvalidArchiveError(
            f"{name} mixes {len(pyramids)} DICOM series; zip one slide's series per upload"
        )
    for uid, paths in series.items():
        if uid not in (pyramids[0], f"aside:{pyramids[0]}"):
            aside.extend(paths)
    for path in aside:
        path.unlink()
    if aside:
        logger.info("left out %d DICOM files that are not the slide's series", len(aside))
