"""Where the notebooks find the real IDC patches, and a few patients to work on.

The patches live in ``../shared/data/IDC_regular_ps50_idx5`` next to the
repository root, or wherever ``BCD_SAMPLE_DATA`` points.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PATIENTS = ("10253", "10255", "10256")


def find_sample_data() -> Path:
    """The ``IDC_regular_ps50_idx5`` folder (``BCD_SAMPLE_DATA``, else next to the repository).

    Raises:
        FileNotFoundError: The folder is absent; the message says where it was looked for.
    """
    given = os.environ.get("BCD_SAMPLE_DATA")
    if given:
        candidates = [Path(given).expanduser()]
    else:
        here = Path.cwd().resolve()
        roots = [path for path in (here, *here.parents) if (path / "pyproject.toml").is_file()]
        candidates = [root.parent / "shared" / "data" / "IDC_regular_ps50_idx5" for root in roots]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(path) for path in candidates) or "no repository root above here"
    raise FileNotFoundError(
        f"the IDC sample patches are not here ({looked}); set BCD_SAMPLE_DATA to an "
        "IDC_regular_ps50_idx5 folder to run this notebook"
    )


def sample_patients(data: Path, patients: tuple[str, ...] = PATIENTS) -> Path:
    """A new folder holding links to a few patients' folders (nothing is copied).

    Args:
        data: The ``IDC_regular_ps50_idx5`` folder.
        patients: The patient ids to link.

    Returns:
        The folder, ready for ``bcd.data.import_dataset``.
    """
    folder = Path(tempfile.mkdtemp(prefix="idc-sample-")) / "IDC_regular_ps50_idx5"
    folder.mkdir()
    for patient in patients:
        (folder / patient).symlink_to(data / patient, target_is_directory=True)
    return folder


def notebook_home() -> Path:
    """``BCD_HOME`` when set, else a new temporary folder (set as ``BCD_HOME`` here)."""
    home = os.environ.get("BCD_HOME") or tempfile.mkdtemp(prefix="bcd-notebook-")
    os.environ["BCD_HOME"] = home
    return Path(home)
