"""Packed splits: decoded uint8 patches in one memory-mappable file, plus labels and manifest.

A packed split folder is self-contained, so it can be copied anywhere (a
training job's ``SM_CHANNEL_TRAIN``) and opened by path::

    images.u8          raw C-order uint8, shape (N, 50, 50, 3)
    labels.npy         (N,) int64
    manifest.parquet   one row per patch: patient_id, x, y, label, source_path,
                       width, height, sha256, padded
    split.json         format, count, shards, fingerprint, channel stats, class counts

``split.json`` is written last; a folder without it is not a packed split.
Shards are contiguous blocks of records (``[start, stop)``) used as the unit of
remote reads and of work division; the file itself is one array so that
``images`` is a plain ``numpy.memmap``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bcd.data._patch_names import PATCH_SIZE
from bcd.errors import InvalidInputError

FORMAT = "bcd-packed-split"
FORMAT_VERSION = 1
IMAGES_FILE = "images.u8"
LABELS_FILE = "labels.npy"
MANIFEST_FILE = "manifest.parquet"
META_FILE = "split.json"
DEFAULT_SHARD_SIZE = 4096
RECORD_SHAPE = (PATCH_SIZE, PATCH_SIZE, 3)
RECORD_BYTES = PATCH_SIZE * PATCH_SIZE * 3

MANIFEST_COLUMNS = (
    "patient_id",
    "x",
    "y",
    "label",
    "source_path",
    "width",
    "height",
    "sha256",
    "padded",
)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class PackedSplit:
    """One split of a dataset, ready for training: arrays, manifest and stats.

    Build it with :meth:`open` (a packed split folder) or :meth:`from_arrays`
    (file mode, decoded in memory).

    Attributes:
        images: (N, 50, 50, 3) uint8; a read-only ``numpy.memmap`` for packed data.
        labels: (N,) int64, 0 = no IDC, 1 = IDC.
        patient_ids: (N,) str.
        xs: (N,) int64 left edge of each patch in its slide.
        ys: (N,) int64 top edge of each patch in its slide.
        fingerprint: ``sha256:<hex>`` over pixels, labels, patients and coordinates.
        path: The folder it was opened from (``None`` for in-memory splits).
        meta: The content of ``split.json``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        patient_ids: np.ndarray,
        xs: np.ndarray,
        ys: np.ndarray,
        meta: dict[str, Any],
        path: Path | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.patient_ids = patient_ids
        self.xs = xs
        self.ys = ys
        self.meta = meta
        self.path = path
        self.fingerprint: str = meta["fingerprint"]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"PackedSplit(dataset={self.dataset!r}, split={self.split!r}, n={len(self)}, "
            f"fingerprint={self.fingerprint[:19]}…)"
        )

    @property
    def dataset(self) -> str | None:
        """Name of the dataset the split comes from, when known."""
        return self.meta.get("dataset")

    @property
    def split(self) -> str | None:
        """Name of the split (``train``, ``validation``, ``test``, ``all``), when known."""
        return self.meta.get("split")

    @property
    def shards(self) -> list[tuple[int, int]]:
        """Contiguous ``[start, stop)`` record ranges."""
        return [(int(a), int(b)) for a, b in self.meta.get("shards", [[0, len(self)]])]

    def class_counts(self) -> dict[int, int]:
        """Number of patches per label."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel (R, G, B) mean and std of the pixels on the 0–1 scale.

        Returns:
            ``(mean, std)``, each a list of 3 floats; read from ``split.json``
            when stored, computed otherwise.
        """
        if "channel_mean" in self.meta and "channel_std" in self.meta:
            return list(self.meta["channel_mean"]), list(self.meta["channel_std"])
        stats = ChannelStats()
        for start in range(0, len(self), 8192):
            stats.update(np.asarray(self.images[start : start + 8192]))
        mean, std = stats.result()
        self.meta["channel_mean"], self.meta["channel_std"] = mean, std
        return mean, std

    def manifest(self) -> Any:
        """The manifest as a ``pyarrow.Table`` (see :data:`MANIFEST_COLUMNS`)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.path is not None:
            return pq.read_table(self.path / MANIFEST_FILE)
        return pa.table(
            {
                "patient_id": self.patient_ids.astype(str).tolist(),
                "x": self.xs,
                "y": self.ys,
                "label": self.labels,
            }
        )

    @classmethod
    def open(cls, path: str | Path) -> PackedSplit:
        """Open a packed split folder; the pixels are memory-mapped, not read.

        Args:
            path: The folder holding ``split.json``, ``images.u8``, ….

        Returns:
            The split.

        Raises:
            InvalidInputError: When the folder is not a packed split, or it is damaged.
        """
        import pyarrow.parquet as pq

        folder = Path(path)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise InvalidInputError(
                f"{folder} is not a packed split (no {META_FILE}); pack it with "
                "`bcd data import` or pass a file-mode folder with a .lst/.csv list"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{meta_path} is not valid JSON ({exc})") from exc
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise InvalidInputError(f"{meta_path} is not a {FORMAT} v{FORMAT_VERSION} description")
        count = int(meta["count"])
        images_path = folder / IMAGES_FILE
        expected = count * RECORD_BYTES
        actual = images_path.stat().st_size if images_path.is_file() else -1
        if actual != expected:
            raise InvalidInputError(
                f"packed split {folder} is damaged: {IMAGES_FILE} has {actual} bytes, "
                f"expected {expected}; import the dataset again"
            )
        images = (
            np.memmap(images_path, dtype=np.uint8, mode="r", shape=(count, *RECORD_SHAPE))
            if count
            else np.empty((0, *RECORD_SHAPE), np.uint8)
        )
        labels = np.load(folder / LABELS_FILE, allow_pickle=False).astype(np.int64)
        table = pq.read_table(folder / MANIFEST_FILE, columns=["patient_id", "x", "y"])
        if labels.shape != (count,) or table.num_rows != count:
            raise InvalidInputError(
                f"packed split {folder} is damaged: {count} images, {labels.shape[0]} labels, "
                f"{table.num_rows} manifest rows; import the dataset again"
            )
        patient_ids = np.asarray(table.column("patient_id").to_pylist(), dtype=str)
        xs = table.column("x").to_numpy().astype(np.int64)
        ys = table.column("y").to_numpy().astype(np.int64)
        return cls(images, labels, patient_ids, xs, ys, meta, folder)

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        patient_ids: Sequence[str] | np.ndarray,
        xs: Sequence[int] | np.ndarray | None = None,
        ys: Sequence[int] | np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> PackedSplit:
        """An in-memory split (file mode), with its fingerprint computed.

        Args:
            images: (N, 50, 50, 3) uint8.
            labels: N labels (0/1).
            patient_ids: N patient ids.
            xs: N left edges (zeros when unknown).
            ys: N top edges (zeros when unknown).
            meta: Extra description (``dataset``, ``split``, …).

        Returns:
            The split.
        """
        count = len(labels)
        labels_array = np.asarray(labels, dtype=np.int64)
        patients = np.asarray(patient_ids, dtype=str)
        x_array = np.zeros(count, np.int64) if xs is None else np.asarray(xs, np.int64)
        y_array = np.zeros(count, np.int64) if ys is None else np.asarray(ys, np.int64)
        hasher = Fingerprinter()
        hasher.update_images(images)
        description = {"format": FORMAT, "format_version": FORMAT_VERSION, "count": count}
        description.update(meta or {})
        description["fingerprint"] = hasher.finish(labels_array, patients, x_array, y_array)
        description["shards"] = shard_ranges(count, DEFAULT_SHARD_SIZE)
        return cls(images, labels_array, patients, x_array, y_array, description)


class ChannelStats:
    """Running per-channel pixel sums for mean/std on the 0–1 scale.

    Sums are of integers held in float64, exact below 2**53 (far above any
    dataset's sum of squares: 65025 per pixel).
    """

    def __init__(self) -> None:
        self.count = 0
        self.total = np.zeros(3, np.float64)
        self.squares = np.zeros(3, np.float64)

    def update(self, images: np.ndarray) -> None:
        """Add a batch of (n, H, W, 3) uint8 images."""
        # Channel-major first: reductions over contiguous rows are many times
        # faster than over the 3-wide pixel axis.
        channels = np.ascontiguousarray(np.asarray(images, np.uint8).reshape(-1, 3).T)
        values = channels.astype(np.float32)
        self.count += values.shape[1]
        self.total += values.sum(axis=1, dtype=np.float64)
        self.squares += np.einsum("ij,ij->i", values, values, dtype=np.float64)

    def result(self) -> tuple[list[float], list[float]]:
        """``(mean, std)`` per channel, 0–1 scale (zeros when empty)."""
        if self.count == 0:
            return [0.0] * 3, [0.0] * 3
        mean = self.total / self.count
        variance = np.maximum(self.squares / self.count - mean**2, 0.0)
        return (mean / 255.0).round(6).tolist(), (np.sqrt(variance) / 255.0).round(6).tolist()


class Fingerprinter:
    """sha256 over pixels (streamed), then labels, patients and coordinates."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"bcd-packed-split-v1\n")

    def update_images(self, images: np.ndarray) -> None:
        """Add a batch of images, in record order."""
        contiguous = np.ascontiguousarray(images, dtype=np.uint8)
        self._hash.update(memoryview(contiguous).cast("B"))  # type: ignore[arg-type]

    def finish(
        self, labels: np.ndarray, patient_ids: np.ndarray, xs: np.ndarray, ys: np.ndarray
    ) -> str:
        """The fingerprint, ``sha256:<hex>``."""
        self._hash.update(np.asarray(labels, "<i8").tobytes())
        self._hash.update("\n".join(np.asarray(patient_ids, str).tolist()).encode())
        self._hash.update(np.asarray(xs, "<i8").tobytes())
        self._hash.update(np.asarray(ys, "<i8").tobytes())
        return f"sha256:{self._hash.hexdigest()}"


def shard_ranges(count: int, shard_size: int) -> list[list[int]]:
    """``[start, stop)`` blocks of at most ``shard_size`` records covering ``count``."""
    return [[start, min(start + shard_size, count)] for start in range(0, count, shard_size)]


class PackedSplitWriter:
    """Writes a packed split folder record batch by record batch.

    Args:
        folder: Where to write (created; must be empty or absent).
        meta: Extra ``split.json`` fields (``dataset``, ``split``, …).
        shard_size: Records per shard.
    """

    def __init__(
        self, folder: Path, meta: dict[str, Any] | None = None, shard_size: int = DEFAULT_SHARD_SIZE
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta or {})
        self.shard_size = shard_size
        self._images = open(self.folder / IMAGES_FILE, "wb")  # noqa: SIM115 - closed in close()
        self._hasher = Fingerprinter()
        self._stats = ChannelStats()
        self._columns: dict[str, list[Any]] = {name: [] for name in MANIFEST_COLUMNS}

    def append(self, images: np.ndarray, records: dict[str, Sequence[Any]]) -> None:
        """Add a batch.

        Args:
            images: (n, 50, 50, 3) uint8.
            records: One sequence of n values per name in :data:`MANIFEST_COLUMNS`.
        """
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.shape[1:] != RECORD_SHAPE:
            raise ValueError(f"images must be (n, 50, 50, 3); got {images.shape}")
        self._images.write(memoryview(images).cast("B"))  # type: ignore[arg-type]
        self._hasher.update_images(images)
        self._stats.update(images)
        for name in MANIFEST_COLUMNS:
            values = records[name]
            if len(values) != images.shape[0]:
                raise ValueError(f"manifest column {name} has {len(values)} values")
            self._columns[name].extend(values)

    def close(self) -> dict[str, Any]:
        """Write labels, manifest and ``split.json`` (last); returns ``split.json``'s content."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._images.flush()
        os.fsync(self._images.fileno())
        self._images.close()
        columns = self._columns
        count = len(columns["label"])
        labels = np.asarray(columns["label"], dtype=np.int64)
        patients = np.asarray(columns["patient_id"], dtype=str)
        xs = np.asarray(columns["x"], dtype=np.int64)
        ys = np.asarray(columns["y"], dtype=np.int64)
        with open(self.folder / LABELS_FILE, "wb") as handle:
            np.save(handle, labels, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        table = pa.table(
            {
                "patient_id": pa.array(columns["patient_id"], pa.string()),
                "x": pa.array(xs, pa.int64()),
                "y": pa.array(ys, pa.int64()),
                "label": pa.array(labels, pa.int8()),
                "source_path": pa.array(columns["source_path"], pa.string()),
                "width": pa.array(columns["width"], pa.int16()),
                "height": pa.array(columns["height"], pa.int16()),
                "sha256": pa.array(columns["sha256"], pa.string()),
                "padded": pa.array(columns["padded"], pa.bool_()),
            }
        )
        pq.write_table(table, self.folder / MANIFEST_FILE)
        mean, std = self._stats.result()
        values, counts = np.unique(labels, return_counts=True)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **self.meta,
            "count": count,
            "image_shape": list(RECORD_SHAPE),
            "dtype": "uint8",
            "layout": "NHWC",
            "shards": shard_ranges(count, self.shard_size),
            "fingerprint": self._hasher.finish(labels, patients, xs, ys),
            "channel_mean": mean,
            "channel_std": std,
            "class_counts": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
            "patients": len(set(patients.tolist())),
        }
        _fsync_write(self.folder / META_FILE, json.dumps(meta, indent=2).encode())
        return meta


def write_subset(
    source: PackedSplit, indices: np.ndarray, folder: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    """Write the records ``indices`` of ``source`` (in that order) as a new packed split.

    Args:
        source: A packed split opened from a folder (its manifest is copied).
        indices: Record indices to keep.
        folder: The new split's folder.
        meta: Extra ``split.json`` fields.

    Returns:
        The new ``split.json`` content.
    """
    table = source.manifest()
    writer = PackedSplitWriter(folder, meta)
    block = 4096
    for start in range(0, len(indices), block):
        chosen = np.asarray(indices[start : start + block], dtype=np.int64)
        rows = table.take(chosen).to_pydict()
        writer.append(np.asarray(source.images[chosen]), rows)
    return writer.close()
