"""Import sources: an IDC folder tree, or the Kaggle zip read in place (no extraction)."""

from __future__ import annotations

import abc
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bcd.errors import InvalidInputError, NotFoundError


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A picklable description of a source, so pool workers can open it themselves.

    Attributes:
        kind: ``"folder"`` or ``"zip"``.
        location: Absolute path of the folder or zip file.
    """

    kind: str
    location: str

    def open(self) -> BaseSource:
        """Open the source this spec describes."""
        if self.kind == "zip":
            return ZipSource(Path(self.location))
        return FolderSource(Path(self.location))


class BaseSource(abc.ABC):
    """Files to import, addressed by ``/``-separated paths relative to the source."""

    spec: SourceSpec

    @abc.abstractmethod
    def list_files(self) -> list[str]:
        """Paths of every regular file in the source, sorted."""

    @abc.abstractmethod
    def read(self, path: str) -> bytes:
        """The bytes of the file at ``path`` (raises ``OSError`` when unreadable)."""

    def close(self) -> None:  # noqa: B027 - optional hook; folders hold no handles
        """Release open handles."""


class FolderSource(BaseSource):
    """A folder tree such as ``IDC_regular_ps50_idx5/``.

    Symlinked folders (a patient folder linked in from elsewhere) are followed;
    a link that leads back into a folder already walked (a loop, or the same
    patient reached twice) is refused, since importing it would repeat patches.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = SourceSpec("folder", str(root))

    def list_files(self) -> list[str]:
        """Paths of every file under the root, following symlinked folders.

        Raises:
            InvalidInputError: A symlinked folder leads to a folder already walked.
        """
        found: list[str] = []
        walked: dict[str, str] = {}
        for directory, _dirs, files in os.walk(self.root, followlinks=True):
            relative = Path(directory).relative_to(self.root).as_posix()
            real = os.path.realpath(directory)
            if real in walked:
                seen = "the source folder itself" if walked[real] == "." else repr(walked[real])
                raise InvalidInputError(
                    f"symlinked folder {relative!r} in {self.root} leads back to {seen}, "
                    "which is imported already (a symlink loop, or one folder linked "
                    "twice); remove that link, or link each patient folder once"
                )
            walked[real] = relative
            prefix = "" if relative == "." else f"{relative}/"
            found.extend(prefix + name for name in files)
        return sorted(found)

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()


class ZipSource(BaseSource):
    """A zip archive (the Kaggle download), read member by member."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.spec = SourceSpec("zip", str(archive))
        try:
            self._zip = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidInputError(
                f"{archive} is not a readable zip archive ({exc}); pass the folder tree "
                "or the archive as downloaded"
            ) from exc

    def list_files(self) -> list[str]:
        return sorted(info.filename for info in self._zip.infolist() if not info.is_dir())

    def read(self, path: str) -> bytes:
        try:
            return self._zip.read(path)
        except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
            raise OSError(f"unreadable zip member: {exc}") from exc

    def close(self) -> None:
        self._zip.close()


def open_source(source: str | Path) -> BaseSource:
    """Open an import source.

    Args:
        source: A folder tree of IDC patches or a ``.zip`` archive of one.

    Returns:
        The opened source.

    Raises:
        NotFoundError: When the path does not exist.
        InvalidInputError: When it is neither a folder nor a readable zip.
    """
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise NotFoundError(f"import source {source} does not exist")
    if path.is_dir():
        return FolderSource(path)
    if zipfile.is_zipfile(path):
        return ZipSource(path)
    raise InvalidInputError(
        f"import source {source} is neither a folder nor a zip archive; pass the "
        "IDC_regular_ps50_idx5 folder or the Kaggle archive.zip"
    )
