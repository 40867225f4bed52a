"""``bcd data gc``: remove what interrupted imports and splits left in the dataset store.

A killed ``bcd data import`` leaves a ``<name>/.partial-*`` folder behind (and,
killed between the final move and the catalog commit, an unreferenced
``import-*`` or ``split-*`` folder). None of them is ever visible as data; they
only take disk space. Which of them may go is decided by
:func:`bcd.data._catalog.leftover_reason`: a partial folder whose writer process
is gone at once, any other unreferenced folder once it is older than
:data:`~bcd.data._catalog.ORPHAN_AGE_S`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bcd.config import Settings, get_settings
from bcd.data import _catalog
from bcd.storage import dataset_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leftover:
    """A folder of the dataset store that no dataset uses.

    Attributes:
        key: ``<dataset>/<folder>`` in the dataset store.
        reason: Why it may be removed.
        size_bytes: Disk space its files take.
    """

    key: str
    reason: str
    size_bytes: int


@dataclass
class GcReport:
    """What :func:`collect_garbage` found, and whether it removed it."""

    leftovers: list[Leftover] = field(default_factory=list)
    dry_run: bool = False

    @property
    def size_bytes(self) -> int:
        """Disk space of every leftover together."""
        return sum(leftover.size_bytes for leftover in self.leftovers)


def _size(folder: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


def collect_garbage(
    settings: Settings | None = None, *, dry_run: bool = False, only_partial: bool = False
) -> GcReport:
    """Find, and unless ``dry_run`` remove, the leftovers of every dataset.

    Folders that an import still writes (its process runs) and young folders of
    unknown writer are kept. Only local dataset stores are swept; remote ones
    keep nothing aside (their staging is a local temporary folder).

    Args:
        settings: Where the catalog and dataset store are (default: environment).
        dry_run: Only report what would be removed.
        only_partial: Only unfinished ``.partial-*`` folders (what every import
            sweeps before it starts), not unreferenced finished folders.

    Returns:
        The leftovers found (removed unless ``dry_run``).
    """
    settings = settings or get_settings()
    report = GcReport(dry_run=dry_run)
    root = dataset_store(settings).local_path("")
    if root is None or not root.is_dir():
        return report
    for dataset in sorted(child for child in root.iterdir() if child.is_dir()):
        for key, reason in _catalog.find_orphans(settings, dataset.name):
            folder = root / key
            if only_partial and not folder.name.startswith(_catalog.PARTIAL_PREFIX):
                continue
            report.leftovers.append(Leftover(key, reason, _size(folder)))
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
    if report.leftovers and not dry_run:
        logger.info(
            "removed %d leftover folder(s) of interrupted imports (%d bytes)",
            len(report.leftovers),
            report.size_bytes,
        )
    return report
