"""The artifact store contract."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import IO


class BaseArtifactStore(abc.ABC):
    """Where datasets and job artifacts live, addressed by keys under a root URL.

    Keys are ``/``-separated relative paths (``training-jobs/NAME/model/model.onnx``).
    Implementations are thread-safe for distinct keys. Writes of whole folders
    are atomic from a reader's point of view where the backend allows it
    (local: a rename; object stores: the marker file ``_COMPLETE`` is written last).

    Raises (all methods):
        NotFoundError: when a key that must exist does not.
    """

    root: str

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """The full URL of ``key`` (a local path for local stores)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a file or folder exists at ``key``."""

    @abc.abstractmethod
    def open(self, key: str, mode: str = "rb") -> IO[bytes]:
        """Open the file at ``key``; ``"wb"`` creates parent folders."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys of all files under ``prefix``, sorted, relative to the root."""

    @abc.abstractmethod
    def put_dir(self, local_dir: Path, key: str) -> str:
        """Copy a local folder to ``key`` (replacing it); returns its URL."""

    @abc.abstractmethod
    def get_dir(self, key: str, local_dir: Path) -> Path:
        """Copy the folder at ``key`` into ``local_dir``; returns ``local_dir``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the file or folder at ``key``; missing keys are not an error."""

    def read_bytes(self, key: str) -> bytes:
        """The whole content of the file at ``key``."""
        with self.open(key, "rb") as handle:
            return handle.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to the file at ``key``."""
        with self.open(key, "wb") as handle:
            handle.write(data)

    def local_path(self, key: str) -> Path | None:
        """The local filesystem path of ``key``, or ``None`` for remote stores."""
        return None
