"""What a transform job reads: a packed split, a folder of patches or a folder of slides.

:func:`plan_input` turns the job's input URI into an :class:`InputPlan`: the
ordered list of records (packed patches, or files relative to the folder),
an identity that changes when the input does, and the chunking. Chunks are
the unit of work and of progress: each is read, scored and written on its
own, so a resumed job skips the chunks it finished. :func:`read_patches`
reads one chunk of patches; files that cannot be used come back as failures
with the reason, never as an exception.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bcd.config import Settings
from bcd.errors import InvalidInputError, NotFoundError
from bcd.transform._spec import SLIDE_CONTENT_TYPE

DATASET, PATCHES, SLIDES = "dataset", "patches", "slides"
PATCH_BYTES = 50 * 50 * 3
#: Files beside patches that are notes or manifests, not records.
_NOTE_SUFFIXES = (".csv", ".md", ".txt", ".lst", ".json")
_WHOLE_SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
_SPLITS: dict[str, Any] = {}
_SPLITS_LOCK = threading.Lock()


@dataclass
class InputPlan:
    """The records of a transform input and how they are chunked.

    Attributes:
        kind: ``dataset`` (a packed split), ``patches`` or ``slides`` (a folder).
        root: The packed split folder, or the input folder (local paths).
        count: Number of records.
        identity: ``sha256:<hex>``: the split's fingerprint, or a hash of the
            folder's file names, sizes and modification times.
        chunk_records: Records per chunk (slides: 1).
        sources: Folder inputs: the files, relative to ``root``, in order.
    """

    kind: str
    root: str
    count: int
    identity: str
    chunk_records: int
    sources: list[str] = field(default_factory=list)

    def chunks(self) -> list[tuple[int, int]]:
        """``[start, stop)`` record ranges, one per chunk."""
        return [
            (start, min(start + self.chunk_records, self.count))
            for start in range(0, self.count, self.chunk_records)
        ]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy (what ``plan.json`` in the output folder holds)."""
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> InputPlan:
        """The plan back from :meth:`to_json`."""
        return cls(**document)


def _list_files(root: Path) -> list[str]:
    found: list[str] = []
    for directory, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f != "__MACOSX")
        relative = Path(directory).relative_to(root)
        found.extend(
            (relative / name).as_posix()
            for name in sorted(files)
            if not name.startswith(".") and not name.lower().endswith(_NOTE_SUFFIXES)
        )
    return found


def _folder_identity(root: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for relative in files:
        try:
            stat = (root / relative).stat()
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{relative}\0missing\n".encode())
    return f"sha256:{digest.hexdigest()}"


def _folder_kind(files: list[str], content_type: str | None) -> str:
    if content_type == SLIDE_CONTENT_TYPE:
        return SLIDES
    if content_type is None and any(name.lower().endswith(_WHOLE_SLIDE_SUFFIXES) for name in files):
        return SLIDES
    return PATCHES


def plan_input(
    uri: str, content_type: str | None, max_payload_mb: int, settings: Settings
) -> InputPlan:
    """Find the records of a transform input.

    Args:
        uri: ``dataset://NAME/SPLIT``, a packed split folder (local or fsspec
            URL), or a local folder of patches or slides.
        content_type: ``application/x-slide`` reads a folder as slides; an image
            type as patches; ``None`` decides by the files (whole-slide
            suffixes such as ``.svs`` mean slides).
        max_payload_mb: Megabytes of pixels per chunk of patches.
        settings: Where datasets live.

    Returns:
        The plan.

    Raises:
        NotFoundError: No such dataset, split or folder.
        InvalidInputError: A malformed URI, or a folder without records.
    """
    chunk_records = max(1, max_payload_mb * 1024 * 1024 // PATCH_BYTES)
    local = Path(uri.removeprefix("file://")).expanduser()
    is_folder = "://" not in uri.removeprefix("file://") and local.is_dir()
    if (
        uri.startswith("dataset://")
        or "://" in uri.removeprefix("file://")
        or (is_folder and (local / "split.json").is_file())
    ):
        from bcd.data import open_channel

        if content_type == SLIDE_CONTENT_TYPE:
            raise InvalidInputError(f"{uri} holds packed patches, not slides")
        split = open_channel(uri, settings)
        if split.path is None:
            raise InvalidInputError(f"{uri} is not a packed split; pass its folder or dataset://")
        return InputPlan(DATASET, str(split.path), len(split), split.fingerprint, chunk_records)
    if not is_folder:
        raise NotFoundError(
            f"transform input {uri!r} is neither dataset://NAME/SPLIT nor a folder; pass a "
            "folder of patches or slides, or an imported dataset's split"
        )
    root = local.resolve()
    files = _list_files(root)
    if not files:
        raise InvalidInputError(f"{root} holds no image or slide files to transform")
    kind = _folder_kind(files, content_type)
    return InputPlan(
        kind,
        str(root),
        len(files),
        _folder_identity(root, files),
        1 if kind == SLIDES else chunk_records,
        files,
    )


def _packed_split(root: str) -> tuple[Any, list[str] | None]:
    """The packed split at ``root`` and its source paths, opened once per process."""
    from bcd.data import PackedSplit

    with _SPLITS_LOCK:
        entry = _SPLITS.get(root)
        if entry is None:
            split = PackedSplit.open(root)
            manifest = split.manifest()
            names = (
                [str(name) for name in manifest.column("source_path").to_pylist()]
                if "source_path" in manifest.column_names
                else None
            )
            _SPLITS.clear()  # one split at a time: a job reads one input
            entry = _SPLITS[root] = (split, names)
        return entry  # type: ignore[no-any-return]


@dataclass
class PatchChunk:
    """One chunk of patches, read.

    Attributes:
        indices: (N,) record indices of the chunk, in order.
        sources: (N,) where each record comes from (relative path or dataset index).
        images: (K, 50, 50, 3) uint8 patches of the readable records.
        readable: (N,) bool, which records are in ``images``.
        reasons: (N,) why a record could not be read ("" when it could).
        meta: ``patient_id``, ``x``, ``y``, ``label`` per record (``None`` when unknown).
    """

    indices: list[int]
    sources: list[str]
    images: np.ndarray
    readable: np.ndarray
    reasons: list[str]
    meta: list[dict[str, Any]]


def _read_packed(plan: InputPlan, start: int, stop: int) -> PatchChunk:
    split, names = _packed_split(plan.root)
    count = stop - start
    meta = [
        {
            "patient_id": str(split.patient_ids[index]),
            "x": int(split.xs[index]),
            "y": int(split.ys[index]),
            "label": int(split.labels[index]),
        }
        for index in range(start, stop)
    ]
    sources = names[start:stop] if names is not None else [str(i) for i in range(start, stop)]
    return PatchChunk(
        indices=list(range(start, stop)),
        sources=[str(source) for source in sources],
        images=np.asarray(split.images[start:stop]),
        readable=np.ones(count, dtype=bool),
        reasons=[""] * count,
        meta=meta,
    )


def _read_file(root: Path, relative: str) -> tuple[np.ndarray | None, str, dict[str, Any]]:
    from bcd.data import decode_patch, parse_patch_path

    meta: dict[str, Any] = {"patient_id": None, "x": None, "y": None, "label": None}
    try:
        parsed = parse_patch_path(relative)
        meta = {"patient_id": parsed.patient_id, "x": parsed.x, "y": parsed.y}
        meta["label"] = parsed.label
    except ValueError:
        pass  # any file name is fine to score; the dataset's names just add facts
    try:
        image, _, _ = decode_patch((root / relative).read_bytes(), "pad")
    except OSError as error:
        return None, f"unreadable file ({error.strerror or error})", meta
    except ValueError as error:
        return None, str(error), meta
    return image, "", meta


def read_patches(plan: InputPlan, start: int, stop: int, threads: int = 2) -> PatchChunk:
    """Read records ``[start, stop)`` of a patch input.

    Args:
        plan: A ``dataset`` or ``patches`` plan.
        start: First record.
        stop: One past the last record.
        threads: Decoding threads for folder inputs.

    Returns:
        The chunk; unreadable files are marked with their reason.
    """
    if plan.kind == DATASET:
        return _read_packed(plan, start, stop)
    root = Path(plan.root)
    sources = plan.sources[start:stop]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(lambda relative: _read_file(root, relative), sources))
    images = [image for image, _, _ in results if image is not None]
    return PatchChunk(
        indices=list(range(start, stop)),
        sources=sources,
        images=np.stack(images) if images else np.empty((0, 50, 50, 3), dtype=np.uint8),
        readable=np.asarray([image is not None for image, _, _ in results], dtype=bool),
        reasons=[reason for _, reason, _ in results],
        meta=[meta for _, _, meta in results],
    )
