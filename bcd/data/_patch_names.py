"""Parsing of IDC patch paths: ``<patient>/<label>/<patient>_idx5_x<X>_y<Y>_class<C>.png``."""

from __future__ import annotations

import re
from dataclasses import dataclass

PATCH_SIZE = 50
"""Side of a full patch, in pixels."""

_FILE_NAME = re.compile(
    r"^(?P<patient>[A-Za-z0-9]+)_idx5_x(?P<x>\d{1,7})_y(?P<y>\d{1,7})_class(?P<label>[01])\.png$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class PatchName:
    """What a patch's path says about it.

    Attributes:
        patient_id: The patient the patch was cut from.
        x: Left edge of the patch in the slide, in pixels.
        y: Top edge of the patch in the slide, in pixels.
        label: 0 (no IDC) or 1 (IDC).
        key: ``<patient>/<label>/<file name>``, the path relative to the tree's root,
            used to spot the same patch twice in one source.
    """

    patient_id: str
    x: int
    y: int
    label: int
    key: str


class BadPatchName(ValueError):
    """A path that is not an IDC patch; the message is the reason for the import report."""


def is_ignorable(path: str) -> bool:
    """Whether ``path`` is operating-system clutter (hidden files, ``__MACOSX``), not data."""
    parts = path.replace("\\", "/").split("/")
    return any(part.startswith(".") or part == "__MACOSX" for part in parts if part)


def parse_patch_path(path: str) -> PatchName:
    """Read patient, coordinates and label from a patch path.

    The label is given twice (the ``<label>`` folder and ``class<C>`` in the file
    name) and so is the patient (folder and file name); both pairs must agree.

    Args:
        path: ``/``-separated path of the file inside the source (any prefix
            above the patient folder is allowed).

    Returns:
        The parsed :class:`PatchName`.

    Raises:
        BadPatchName: When the file name does not follow the IDC pattern or the
            folders disagree with it.
    """
    parts = [part for part in path.replace("\\", "/").split("/") if part]
    file_name = parts[-1] if parts else ""
    match = _FILE_NAME.match(file_name)
    if match is None:
        raise BadPatchName("name does not match <patient>_idx5_x<X>_y<Y>_class<0|1>.png")
    patient_id = match["patient"]
    label = int(match["label"])
    if len(parts) < 3:
        raise BadPatchName("file is not inside <patient>/<0|1>/ folders")
    label_folder, patient_folder = parts[-2], parts[-3]
    if label_folder not in ("0", "1"):
        raise BadPatchName(f"label folder {label_folder!r} is not 0 or 1")
    if int(label_folder) != label:
        raise BadPatchName(
            f"label folder {label_folder} disagrees with class{label} in the file name"
        )
    if patient_folder != patient_id:
        raise BadPatchName(
            f"patient folder {patient_folder!r} disagrees with patient {patient_id!r} "
            "in the file name"
        )
    return PatchName(
        patient_id=patient_id,
        x=int(match["x"]),
        y=int(match["y"]),
        label=label,
        key=f"{patient_id}/{label}/{file_name}",
    )


def patch_file_name(patient_id: str, x: int, y: int, label: int) -> str:
    """The IDC file name of a patch, the inverse of :func:`parse_patch_path`."""
    return f"{patient_id}_idx5_x{x}_y{y}_class{label}.png"
