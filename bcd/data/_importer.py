"""``bcd data import``: read a folder tree or zip, validate, decode, pack, and commit."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bcd.config import Settings, get_settings
from bcd.data import _catalog
from bcd.data._decode import ON_SMALL_CHOICES, ChunkResult, decode_chunk, decode_chunk_in_worker
from bcd.data._decode import init_worker as _init_worker
from bcd.data._gc import collect_garbage
from bcd.data._lifeline import die_with_parent
from bcd.data._packed import PackedSplit, PackedSplitWriter
from bcd.data._patch_names import BadPatchName, PatchName, is_ignorable, parse_patch_path
from bcd.data._sources import BaseSource, SourceSpec, open_source
from bcd.data._split import DEFAULT_FRACTIONS, SplitSpec, stage_splits
from bcd.errors import InvalidInputError
from bcd.storage import dataset_store

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with ``(files_done, files_total)`` as an import advances."""

_POOL_THRESHOLD = 2000
_CHUNK = 256


@dataclass
class ImportReport:
    """What an import did, file by file where it matters.

    Attributes:
        name: The dataset.
        source: The folder or zip imported.
        files: Files found (hidden files and ``__MACOSX`` excluded).
        imported: Patches packed.
        patients: Patients with at least one patch.
        class_counts: Label → patches.
        padded: Small patches padded to 50×50.
        duplicates: Files identical to one already imported (same patient, position, bytes).
        ignored: Hidden files and ``__MACOSX`` entries passed over.
        rejected: ``[path, reason]`` for every file that could not be imported.
        skipped: ``[path, reason]`` for small patches left out by ``on_small="skip"``.
        fingerprint: Content hash of the packed dataset.
        seconds: Wall time of the import.
        splits: Split name → counts, when the import also split.
    """

    name: str
    source: str
    files: int = 0
    imported: int = 0
    patients: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    padded: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected: list[list[str]] = field(default_factory=list)
    skipped: list[list[str]] = field(default_factory=list)
    fingerprint: str = ""
    seconds: float = 0.0
    splits: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    name: PatchName


def import_dataset(
    source: str | Path,
    name: str,
    *,
    settings: Settings | None = None,
    replace: bool = False,
    on_small: str = "pad",
    split: SplitSpec | None = SplitSpec(DEFAULT_FRACTIONS, 42),
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import IDC patches from a folder tree or zip as dataset ``name``.

    Every file is parsed and decoded; bad files are listed in the report with a
    reason and never stop the import. The packed data (and, with ``split``, the
    patient-level splits) is written aside and committed in one transaction.

    Args:
        source: ``IDC_regular_ps50_idx5``-style folder, or a zip of one.
        name: Dataset name (letters, digits, hyphens).
        settings: Where the catalog and dataset store are (default: environment).
        replace: Overwrite an existing dataset of that name.
        on_small: ``"pad"`` (white, top-left aligned) or ``"skip"`` patches under 50×50.
        split: How to split after import (``None``: no split; see :func:`split_dataset`).
        workers: Decode processes; ``None`` picks by size (in-process for small imports).
        progress: Optional ``(done, total)`` callback.

    Returns:
        The :class:`ImportReport` (also stored as ``import-report.json``).

    Raises:
        InvalidInputError: Bad name or option, or no importable patch in ``source``.
        NotFoundError: ``source`` does not exist.
        ConflictError: The dataset exists and ``replace`` is false.
    """
    started = time.perf_counter()
    settings = settings or get_settings()
    name = _catalog.dataset_name(name)
    if on_small not in ON_SMALL_CHOICES:
        raise InvalidInputError(
            f"on_small must be one of {', '.join(ON_SMALL_CHOICES)}; got {on_small!r}"
        )
    if not replace and _catalog.dataset_exists(name, settings):
        raise _catalog.ConflictError(
            f"dataset {name!r} exists already; pass --replace (replace=True) to overwrite "
            "it, or choose another name"
        )
    opened = open_source(source)
    # Partial folders of imports killed earlier (their process is gone) go first.
    collect_garbage(settings, only_partial=True)
    report = ImportReport(name=name, source=str(Path(source).expanduser().resolve()))
    try:
        entries = _parse_entries(opened, report)
        store = dataset_store(settings)
        import_key = f"{name}/{_catalog.new_version('import')}"
        with _catalog.staging_folder(store, name) as staged:
            meta = {"dataset": name, "split": "all"}
            writer = PackedSplitWriter(staged / "all", meta)
            _decode_all(opened, entries, writer, report, on_small, workers, progress)
            if report.imported == 0:
                raise InvalidInputError(_nothing_imported(report))
            all_meta = writer.close()
            report.fingerprint = all_meta["fingerprint"]
            report.patients = all_meta["patients"]
            report.class_counts = all_meta["class_counts"]
            report.seconds = round(time.perf_counter() - started, 3)
            _write_json(staged / "import-report.json", report.to_dict())
            values = _record_values(report, import_key, on_small)
            if split is None:
                _catalog.publish_folder(store, staged, import_key)
                previous = _catalog.commit_record(settings, name, values, replace)
            else:
                everything = PackedSplit.open(staged / "all")
                with stage_splits(store, name, everything, split) as (split_key, info):
                    report.splits = info["splits"]
                    _write_json(staged / "import-report.json", report.to_dict())
                    values.update(
                        split_location=split_key, splits=info["splits"], split_config=info["config"]
                    )
                    del everything
                    _catalog.publish_folder(store, staged, import_key)
                    previous = _catalog.commit_record(settings, name, values, replace)
    finally:
        opened.close()
    _catalog.remove_folders(store, list(previous))
    _catalog.remove_orphans(settings, name)
    report.seconds = round(time.perf_counter() - started, 3)
    logger.info(
        "imported dataset %s: %d patches, %d patients, %d padded, %d rejected in %.1f s",
        name, report.imported, report.patients, report.padded, len(report.rejected), report.seconds,
    )  # fmt: skip
    return report


def _parse_entries(source: BaseSource, report: ImportReport) -> list[_Entry]:
    entries: list[_Entry] = []
    for path in source.list_files():
        if is_ignorable(path):
            report.ignored += 1
            continue
        report.files += 1
        try:
            entries.append(_Entry(path, parse_patch_path(path)))
        except BadPatchName as exc:
            report.rejected.append([path, str(exc)])
    # Record order: patient, then slide position; it makes the fingerprint
    # independent of where the tree sits in a folder or zip.
    entries.sort(key=lambda e: (e.name.patient_id, e.name.y, e.name.x, e.name.label, e.path))
    return entries


def _chunks(entries: Sequence[_Entry]) -> Iterator[list[tuple[int, str]]]:
    for start in range(0, len(entries), _CHUNK):
        yield [(i, entries[i].path) for i in range(start, min(start + _CHUNK, len(entries)))]


def _run_chunks(
    source: BaseSource, entries: Sequence[_Entry], on_small: str, workers: int | None
) -> Iterator[ChunkResult]:
    if workers is None:
        workers = 0 if len(entries) < _POOL_THRESHOLD else min(os.cpu_count() or 1, 8)
    if workers <= 1:
        for chunk in _chunks(entries):
            yield decode_chunk(source, chunk, on_small)
        return
    # fork starts workers without re-importing anything; they only decode.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_pool_worker,
        initargs=(os.getpid(), source.spec),
    ) as pool:
        chunks = list(_chunks(entries))
        yield from pool.map(decode_chunk_in_worker, chunks, [on_small] * len(chunks))


def _init_pool_worker(parent_pid: int, spec: SourceSpec) -> None:
    """Pool initializer: end with the importing process, then open the source."""
    die_with_parent(parent_pid)
    _init_worker(spec)


def _decode_all(
    source: BaseSource,
    entries: list[_Entry],
    writer: PackedSplitWriter,
    report: ImportReport,
    on_small: str,
    workers: int | None,
    progress: ProgressCallback | None,
) -> None:
    kept: dict[tuple[str, int, int], tuple[str, str]] = {}  # position → (path, sha256)
    done = 0
    total = len(entries)
    for result in _run_chunks(source, entries, on_small, workers):
        for index, reason in result.rejected:
            report.rejected.append([entries[index].path, reason])
        for index, reason in result.skipped:
            report.skipped.append([entries[index].path, reason])
        keep: list[int] = []
        for row, index in enumerate(result.indices):
            entry = entries[index]
            position = (entry.name.patient_id, entry.name.x, entry.name.y)
            digest = result.hashes[row]
            if position in kept:
                first_path, first_digest = kept[position]
                if first_digest == digest:
                    report.duplicates += 1
                else:
                    report.rejected.append(
                        [entry.path, f"same patient and position as {first_path}, other content"]
                    )
                continue
            kept[position] = (entry.path, digest)
            keep.append(row)
        if keep:
            _append(writer, entries, result, keep)
            report.imported += len(keep)
            report.padded += sum(
                1 for row in keep if (result.widths[row], result.heights[row]) != (50, 50)
            )
        done += len(result.indices) + len(result.rejected) + len(result.skipped)
        if progress is not None:
            progress(done, total)


def _append(
    writer: PackedSplitWriter, entries: list[_Entry], result: ChunkResult, keep: list[int]
) -> None:
    names = [entries[result.indices[row]] for row in keep]
    widths = [result.widths[row] for row in keep]
    heights = [result.heights[row] for row in keep]
    writer.append(
        result.images[np.asarray(keep)],
        {
            "patient_id": [e.name.patient_id for e in names],
            "x": [e.name.x for e in names],
            "y": [e.name.y for e in names],
            "label": [e.name.label for e in names],
            "source_path": [e.path for e in names],
            "width": widths,
            "height": heights,
            "sha256": [result.hashes[row] for row in keep],
            "padded": [(w, h) != (50, 50) for w, h in zip(widths, heights, strict=True)],
        },
    )


def _nothing_imported(report: ImportReport) -> str:
    reasons: dict[str, int] = {}
    for _path, reason in report.rejected + report.skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    top = "; ".join(
        f"{count}× {reason}" for reason, count in sorted(reasons.items(), key=lambda t: -t[1])[:3]
    )
    return (
        f"no IDC patch could be imported from {report.source} ({report.files} file(s) found"
        f"{': ' + top if top else ''}); expected "
        "<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<0|1>.png"
    )


def _record_values(report: ImportReport, import_key: str, on_small: str) -> dict[str, Any]:
    return {
        "location": import_key,
        "split_location": None,
        "fingerprint": report.fingerprint,
        "source": report.source,
        "num_patches": report.imported,
        "num_patients": report.patients,
        "num_padded": report.padded,
        "num_rejected": len(report.rejected),
        "summary": {
            "class_counts": report.class_counts,
            "on_small": on_small,
            "skipped": len(report.skipped),
            "duplicates": report.duplicates,
            "ignored": report.ignored,
            "files": report.files,
            "seconds": report.seconds,
        },
        "splits": {},
        "split_config": {},
    }


def _write_json(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(content, indent=2))
    os.replace(temporary, path)


def read_import_report(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """The stored import report of dataset ``name``.

    Raises:
        NotFoundError: When no such dataset exists.
    """
    settings = settings or get_settings()
    record = _catalog.get_record(name, settings)
    content = dataset_store(settings).read_bytes(f"{record.location}/import-report.json")
    return dict(json.loads(content))
