"""Read a folder in the dataset layout into memory, without importing it.

A user's own hold-out set only has to follow the dataset's layout,
``<root>/<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png``.
Paths are parsed and patches decoded by the data layer's own functions
(:func:`bcd.data.parse_patch_path`, :func:`bcd.data.decode_patch`), so a folder
is read exactly as ``bcd data import`` would read it: small edge patches are
padded with white. Files that cannot be used are listed with a reason, never
skipped silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bcd.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)


@dataclass
class FolderPatches:
    """Patches decoded from a dataset-layout folder.

    Attributes:
        root: The folder.
        images: (N, 50, 50, 3) uint8 patches.
        labels: (N,) int64 labels.
        patient_ids: (N,) patient ids.
        xs: (N,) int64 x coordinates of the patches in their slides.
        ys: (N,) int64 y coordinates.
        fingerprint: ``sha256:<hex>`` over relative paths and file bytes.
        rejected: ``(relative path, reason)`` of every file left out.
    """

    root: Path
    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    fingerprint: str
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _list_files(root: Path) -> list[str]:
    found: list[str] = []
    for directory, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f != "__MACOSX")
        relative = Path(directory).relative_to(root)
        found.extend(
            (relative / name).as_posix() for name in sorted(files) if not name.startswith(".")
        )
    return found


def read_patch_folder(
    root: Path | str, progress: Callable[[int, int], None] | None = None
) -> FolderPatches:
    """Decode every patch of a dataset-layout folder into memory.

    Args:
        root: ``<root>/<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<C>.png``.
        progress: Called with (files done, files total) as decoding goes.

    Returns:
        The decoded patches and the files left out with their reasons.

    Raises:
        NotFoundError: ``root`` is not a folder.
        InvalidInputError: No usable patch was found.
    """
    from bcd.data import decode_patch, parse_patch_path

    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise NotFoundError(
            f"{root} is not a folder; pass a folder laid out as "
            "<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<C>.png"
        )
    paths = _list_files(root)
    digest = hashlib.sha256()
    rejected: list[tuple[str, str]] = []
    images: list[np.ndarray] = []
    labels: list[int] = []
    patients: list[str] = []
    xs: list[int] = []
    ys: list[int] = []
    for done, path in enumerate(paths, start=1):
        if progress is not None:
            progress(done, len(paths))
        if path.lower().endswith((".csv", ".md", ".txt", ".lst")):
            continue  # manifests and notes beside the patches
        try:
            parsed = parse_patch_path(path)  # raises BadPatchName, a ValueError
            data = (root / path).read_bytes()
            image, _, _ = decode_patch(data, "pad")  # raises Rejected, a ValueError
        except OSError as error:
            rejected.append((path, f"unreadable file ({error.strerror or error})"))
            continue
        except ValueError as error:
            rejected.append((path, str(error)))
            continue
        digest.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
        images.append(image)
        labels.append(parsed.label)
        patients.append(parsed.patient_id)
        xs.append(parsed.x)
        ys.append(parsed.y)
    if rejected:
        logger.warning("%d files in %s were left out; the report lists them", len(rejected), root)
    if not images:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in rejected[:3])
        raise InvalidInputError(
            f"no usable patches in {root}; expected "
            "<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<C>.png"
            + (f" (for example {reasons})" if reasons else "")
        )
    return FolderPatches(
        root=root,
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        patient_ids=np.asarray(patients, dtype=str),
        xs=np.asarray(xs, dtype=np.int64),
        ys=np.asarray(ys, dtype=np.int64),
        fingerprint=f"sha256:{digest.hexdigest()}",
        rejected=rejected,
    )
