"""Where datasets live and how changes to them become visible atomically.

Layout under the dataset store (``settings.resolved_dataset_root``)::

    <name>/import-<stamp>/      dataset.json, import-report.json, all/ (packed)
    <name>/split-<stamp>/       train/, validation/[, test/] (packed), split.json

A new import or split is written aside (``<name>/.partial-*`` locally, a
temporary folder for remote stores), moved to its final folder, and becomes
visible only when the ``datasets`` row pointing at it commits. A process killed
at any point leaves at most an unreferenced folder. A partial folder records its
writer (pid, process start time, host) in :data:`WRITER_FILE`; one whose writer
is gone is removed by the next import and by ``bcd data gc``, while other
unreferenced folders are removed once older than :data:`ORPHAN_AGE_S`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bcd._process import is_alive, process_start_time
from bcd.config import Settings, get_settings
from bcd.data._tables import DatasetRecord
from bcd.db import session_scope, utcnow
from bcd.errors import ConflictError, NotFoundError
from bcd.names import validate_name
from bcd.storage import BaseArtifactStore, dataset_store

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
ORPHAN_AGE_S = 600.0
"""Unreferenced folders younger than this may belong to a running import; keep them."""
WRITER_FILE = ".writer.json"
"""Inside a partial folder: ``{"pid", "start_time", "host"}`` of the process writing it."""


def new_version(kind: str) -> str:
    """A fresh folder name such as ``import-20260101T120000-1a2b3c``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{kind}-{stamp}-{uuid.uuid4().hex[:6]}"


def dataset_name(name: str) -> str:
    """Validate a dataset name (1–63 chars of letters, digits and hyphens)."""
    return validate_name(name, "dataset name")


def get_record(name: str, settings: Settings | None = None) -> DatasetRecord:
    """The catalog row of dataset ``name``.

    Raises:
        NotFoundError: When no such dataset exists (the message lists known ones).
    """
    with session_scope(settings) as session:
        record = session.scalars(select(DatasetRecord).where(DatasetRecord.name == name)).first()
        if record is None:
            known = session.scalars(select(DatasetRecord.name).order_by(DatasetRecord.name)).all()
            hint = f"known datasets: {', '.join(known)}" if known else "no dataset is imported yet"
            raise NotFoundError(
                f"dataset {name!r} does not exist ({hint}); import it with "
                "`bcd data import SRC --name NAME`"
            )
        session.expunge(record)
        return record


def dataset_exists(name: str, settings: Settings | None = None) -> bool:
    """Whether dataset ``name`` is in the catalog."""
    with session_scope(settings) as session:
        found = session.scalars(select(DatasetRecord.id).where(DatasetRecord.name == name)).first()
        return found is not None


def describe(record: DatasetRecord) -> dict[str, Any]:
    """A catalog row as a plain dict (for the CLI, clients and JSON output)."""
    return {
        "name": record.name,
        "fingerprint": record.fingerprint,
        "source": record.source,
        "patches": record.num_patches,
        "patients": record.num_patients,
        "padded": record.num_padded,
        "rejected": record.num_rejected,
        "summary": record.summary,
        "splits": record.splits,
        "split_config": record.split_config,
        "location": record.location,
        "split_location": record.split_location,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def list_datasets(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every imported dataset, by name."""
    with session_scope(settings) as session:
        records = session.scalars(select(DatasetRecord).order_by(DatasetRecord.name)).all()
        return [describe(record) for record in records]


def delete_dataset(name: str, settings: Settings | None = None) -> None:
    """Remove dataset ``name`` from the catalog, then its files.

    Raises:
        NotFoundError: When no such dataset exists.
    """
    settings = settings or get_settings()
    get_record(name, settings)
    with session_scope(settings) as session:
        record = session.scalars(select(DatasetRecord).where(DatasetRecord.name == name)).one()
        session.delete(record)
    dataset_store(settings).delete(name)
    logger.info("deleted dataset %s", name)


@contextlib.contextmanager
def staging_folder(store: BaseArtifactStore, name: str) -> Iterator[Path]:
    """A local folder to write a new version of ``name`` into; removed on any error.

    For local stores it sits inside the dataset's folder, so the final move is a
    rename on one filesystem.
    """
    local_root = store.local_path(name)
    if local_root is not None:
        local_root.mkdir(parents=True, exist_ok=True)
        folder = local_root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:10]}"
        folder.mkdir()
    else:
        folder = Path(tempfile.mkdtemp(prefix="bcd-dataset-"))
    try:
        _record_writer(folder)
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _record_writer(folder: Path) -> None:
    writer = {
        "pid": os.getpid(),
        "start_time": process_start_time(),
        "host": socket.gethostname(),
    }
    (folder / WRITER_FILE).write_text(json.dumps(writer))


def _writer_gone(folder: Path) -> bool | None:
    """Whether the process writing a partial folder has ended (``None``: unknown)."""
    try:
        writer = json.loads((folder / WRITER_FILE).read_text())
        pid, start_time, host = int(writer["pid"]), writer["start_time"], str(writer["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None  # another machine's import: not ours to judge
    return not is_alive(pid, start_time)


def leftover_reason(child: Path, now: float | None = None) -> str | None:
    """Why an unreferenced folder of a dataset may be removed, or ``None`` to keep it.

    Args:
        child: A folder under ``<dataset>/`` that no catalog row points at.
        now: The current time (seconds since the epoch).

    Returns:
        ``"unfinished write; its process is gone"`` for a partial folder whose
        writer ended, ``"unreferenced for over N s"`` for any folder older than
        :data:`ORPHAN_AGE_S` whose writer is not known to run, else ``None``.
    """
    gone = _writer_gone(child) if child.name.startswith(PARTIAL_PREFIX) else None
    if gone is True:
        return "unfinished write; its process is gone"
    if gone is False or (child / WRITER_FILE).is_file():
        return None  # still being written, or written by another machine
    try:
        age = (now or time.time()) - child.stat().st_mtime
    except OSError:
        return None
    return f"unreferenced for over {ORPHAN_AGE_S:.0f} s" if age >= ORPHAN_AGE_S else None


def publish_folder(store: BaseArtifactStore, staged: Path, key: str) -> None:
    """Move a staged folder to ``key`` in the store (not yet visible: no row points at it)."""
    (staged / WRITER_FILE).unlink(missing_ok=True)
    target = store.local_path(key)
    if target is not None:
        _fsync_tree(staged)
        os.replace(staged, target)
        _fsync_dir(target.parent)
    else:
        store.put_dir(staged, key)
        shutil.rmtree(staged, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for directory, _dirs, _files in os.walk(folder):
        _fsync_dir(Path(directory))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def commit_record(
    settings: Settings, name: str, values: dict[str, Any], replace: bool
) -> tuple[str | None, str | None]:
    """Insert or update the row of ``name`` in one transaction.

    Args:
        settings: Where the catalog is.
        name: The dataset.
        values: Column values to set.
        replace: Whether an existing row may be overwritten.

    Returns:
        The previous ``(location, split_location)`` (``None`` for a new dataset),
        whose folders the caller deletes once this commit is done.

    Raises:
        ConflictError: When the dataset exists and ``replace`` is false.
    """
    try:
        with session_scope(settings) as session:
            record = session.scalars(
                select(DatasetRecord).where(DatasetRecord.name == name)
            ).first()
            if record is None:
                session.add(DatasetRecord(name=name, **values))
                return None, None
            if not replace:
                raise ConflictError(
                    f"dataset {name!r} exists already; pass --replace (replace=True) to "
                    "overwrite it, or choose another name"
                )
            previous = (record.location, record.split_location)
            for column, value in values.items():
                setattr(record, column, value)
            record.updated_at = utcnow()
            return previous
    except IntegrityError as exc:
        raise ConflictError(
            f"dataset {name!r} was created by another process meanwhile; "
            "pass --replace to overwrite it"
        ) from exc


def remove_folders(store: BaseArtifactStore, keys: list[str | None]) -> None:
    """Delete superseded version folders (best effort: leftovers are invisible)."""
    for key in keys:
        if key:
            try:
                store.delete(key)
            except OSError as exc:
                logger.warning("could not remove superseded folder %s: %s", key, exc)


def find_orphans(settings: Settings, name: str) -> list[tuple[str, str]]:
    """Folders of ``name`` that no catalog row points at and may go (crash leftovers).

    Returns:
        ``(key, reason)`` pairs (see :func:`leftover_reason`); a folder whose
        writer still runs, or a young one of unknown writer, is not listed.
    """
    root = dataset_store(settings).local_path(name)
    if root is None or not root.is_dir():
        return []
    referenced: set[str] = set()
    with session_scope(settings) as session:
        record = session.scalars(select(DatasetRecord).where(DatasetRecord.name == name)).first()
        if record is not None:
            referenced = {key for key in (record.location, record.split_location) if key}
    now = time.time()
    found = []
    for child in sorted(root.iterdir()):
        key = f"{name}/{child.name}"
        if key in referenced or not child.is_dir():
            continue
        reason = leftover_reason(child, now)
        if reason is not None:
            found.append((key, reason))
    return found


def remove_orphans(settings: Settings, name: str) -> list[str]:
    """Delete the folders :func:`find_orphans` lists for ``name``.

    Returns:
        The keys removed.
    """
    store = dataset_store(settings)
    removed = []
    for key, _reason in find_orphans(settings, name):
        folder = store.local_path(key)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(key)
    if removed:
        logger.info("removed %d unreferenced folder(s) of dataset %s", len(removed), name)
    return removed
