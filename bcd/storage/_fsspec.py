"""Artifact store over any fsspec filesystem (local folders, ``s3://``, …)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Any

import fsspec

from bcd.errors import NotFoundError
from bcd.storage._base import BaseArtifactStore


class FsspecArtifactStore(BaseArtifactStore):
    """An artifact store rooted at an fsspec URL.

    Args:
        root: A local path or URL such as ``s3://bucket/prefix``.
        storage_options: Keyword arguments for the fsspec filesystem.
    """

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        fs, path = fsspec.core.url_to_fs(str(root), **(storage_options or {}))
        self.fs = fs
        self._is_local = fs.protocol in ("file", "local") or "file" in fs.protocol
        self._root_path = str(Path(path).resolve()) if self._is_local else path.rstrip("/")
        self.root = self._root_path if self._is_local else f"{_protocol(fs)}://{self._root_path}"
        if self._is_local:
            Path(self._root_path).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        key = key.strip("/")
        if ".." in key.split("/"):
            raise NotFoundError(f"artifact key {key!r} may not contain '..'")
        return f"{self._root_path}/{key}" if key else self._root_path

    def url(self, key: str) -> str:
        path = self._path(key)
        return path if self._is_local else f"{_protocol(self.fs)}://{path}"

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def open(self, key: str, mode: str = "rb") -> IO[bytes]:
        path = self._path(key)
        if "w" in mode and self._is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            return self.fs.open(path, mode)  # type: ignore[no-any-return]
        except FileNotFoundError as exc:
            raise NotFoundError(f"no artifact at {self.url(key)}") from exc

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        if self.fs.isfile(base):
            return [prefix.strip("/")]
        found = self.fs.find(base)
        root = self._root_path.rstrip("/") + "/"
        return sorted(str(item)[len(root) :] for item in found)

    def put_dir(self, local_dir: Path, key: str) -> str:
        target = self._path(key)
        if self._is_local:
            # Copy beside the target, then swap it in with renames, so a reader
            # never sees a half-written folder.
            staging = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copytree(local_dir, staging)
            old = None
            if os.path.exists(target):
                old = f"{target}.old-{uuid.uuid4().hex[:8]}"
                os.replace(target, old)
            os.replace(staging, target)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        else:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            for file in sorted(Path(local_dir).rglob("*")):
                if file.is_file():
                    self.fs.put_file(
                        str(file), f"{target}/{file.relative_to(local_dir).as_posix()}"
                    )
        return self.url(key)

    def get_dir(self, key: str, local_dir: Path) -> Path:
        source = self._path(key)
        if not self.fs.exists(source):
            raise NotFoundError(f"no artifact folder at {self.url(key)}")
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        prefix = source.rstrip("/") + "/"
        for item in self.fs.find(source):
            relative = str(item)[len(prefix) :]
            destination = local_dir / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(item, str(destination))
        return local_dir

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def local_path(self, key: str) -> Path | None:
        return Path(self._path(key)) if self._is_local else None


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return protocol[0] if isinstance(protocol, tuple | list) else str(protocol)
