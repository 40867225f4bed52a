"""Opening training channels: ``dataset://NAME/SPLIT``, packed split folders, file mode."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

import fsspec
import numpy as np

from bcd.config import Settings, get_settings
from bcd.data._catalog import get_record
from bcd.data._decode import Rejected, decode_patch
from bcd.data._packed import META_FILE, PackedSplit
from bcd.data._patch_names import BadPatchName, parse_patch_path
from bcd.errors import InvalidInputError, NotFoundError
from bcd.storage import BaseArtifactStore, dataset_store

logger = logging.getLogger(__name__)

SCHEME = "dataset://"
LIST_SUFFIXES = (".lst", ".csv")


def open_split(name: str, split: str, settings: Settings | None = None) -> PackedSplit:
    """Open split ``split`` (``train``, ``validation``, ``test`` or ``all``) of dataset ``name``.

    Args:
        name: An imported dataset.
        split: The split; ``all`` is every imported patch.
        settings: Where the catalog and store are.

    Returns:
        The packed split, memory-mapped.

    Raises:
        NotFoundError: Unknown dataset, or a split it does not have.
    """
    settings = settings or get_settings()
    record = get_record(name, settings)
    store = dataset_store(settings)
    if split == "all":
        return open_location(store, f"{record.location}/all", settings)
    if split not in (record.splits or {}):
        available = ", ".join(["all", *sorted(record.splits or {})])
        raise NotFoundError(
            f"dataset {name!r} has no split {split!r} (available: {available}); "
            f"split it with `bcd data split {name}`"
        )
    return open_location(store, f"{record.split_location}/{split}", settings)


def open_location(store: BaseArtifactStore, key: str, settings: Settings) -> PackedSplit:
    """Open the packed split at ``key`` of ``store``; remote ones are cached locally first."""
    local = store.local_path(key)
    if local is not None:
        return PackedSplit.open(local)
    return PackedSplit.open(_cached_copy(store.url(key), settings))


def open_channel(uri: str | os.PathLike[str], settings: Settings | None = None) -> PackedSplit:
    """Open a training channel.

    Args:
        uri: ``dataset://NAME/SPLIT``; a local path or fsspec URL of a packed split
            folder; or a file-mode folder (images plus one ``.lst``/``.csv`` list) or
            the list file itself.
        settings: Where the catalog, store and cache are.

    Returns:
        The channel's data as a :class:`PackedSplit`.

    Raises:
        InvalidInputError: A malformed URI, or a folder that is neither packed nor file mode.
        NotFoundError: Unknown dataset, split, or path.
    """
    settings = settings or get_settings()
    text = os.fspath(uri)
    if text.startswith(SCHEME):
        parts = text[len(SCHEME) :].strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise InvalidInputError(
                f"channel {text!r} is malformed; use dataset://NAME/SPLIT, e.g. dataset://idc/train"
            )
        return open_split(parts[0], parts[1], settings)
    if "://" in text and not text.startswith("file://"):
        return _open_local(_cached_copy(text, settings))
    return _open_local(Path(text.removeprefix("file://")).expanduser())


def _open_local(path: Path) -> PackedSplit:
    if not path.exists():
        raise NotFoundError(f"channel {path} does not exist")
    if path.is_dir() and (path / META_FILE).is_file():
        return PackedSplit.open(path)
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return read_file_mode(path)
    if path.is_dir():
        lists = sorted(p for p in path.iterdir() if p.suffix.lower() in LIST_SUFFIXES)
        if len(lists) == 1:
            return read_file_mode(lists[0])
        if len(lists) > 1:
            raise InvalidInputError(
                f"{path} holds {len(lists)} list files ({', '.join(p.name for p in lists)}); "
                "pass the one to use"
            )
    raise InvalidInputError(
        f"{path} is neither a packed split (no {META_FILE}) nor a file-mode folder "
        "(images plus one .lst or .csv list)"
    )


def _cached_copy(url: str, settings: Settings) -> Path:
    """Copy a remote folder into ``$BCD_HOME/cache/channels`` once per content version."""
    fs, root = fsspec.core.url_to_fs(url, **settings.storage_options())
    if not fs.exists(root):
        raise NotFoundError(f"channel {url} does not exist")
    version = ""
    meta = f"{root.rstrip('/')}/{META_FILE}"
    if fs.exists(meta):
        version = hashlib.sha256(fs.cat_file(meta)).hexdigest()[:16]
    name = hashlib.sha256(url.encode()).hexdigest()[:16]
    target = settings.home / "cache" / "channels" / f"{name}-{version or 'files'}"
    if target.is_dir() and version:
        return target
    staging = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    prefix = root.rstrip("/") + "/"
    for item in fs.find(root):
        destination = staging / str(item)[len(prefix) :]
        destination.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(item, str(destination))
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def read_file_mode(list_path: Path) -> PackedSplit:
    """Decode the images named by a ``.lst`` or ``.csv`` list into an in-memory split.

    ``.lst`` lines are ``index<TAB>label<TAB>relative/path.png`` (MXNet ``im2rec``);
    a ``.csv`` has a header with ``path`` and ``label`` and optional ``patient_id``,
    ``x``, ``y``. Paths are relative to the list's folder. Patient and position come
    from the IDC file name when the list does not give them.

    Raises:
        InvalidInputError: A malformed list, or images that are missing or undecodable.
    """
    rows = _read_list(list_path)
    if not rows:
        raise InvalidInputError(f"{list_path} lists no images")
    images = np.empty((len(rows), 50, 50, 3), np.uint8)
    labels, patients, xs, ys = [], [], [], []
    problems: list[str] = []
    base = list_path.parent
    for i, (relative, label, patient, x, y) in enumerate(rows):
        try:
            images[i], _, _ = decode_patch((base / relative).read_bytes(), "pad")
        except (OSError, Rejected) as exc:
            problems.append(f"{relative}: {exc}")
            continue
        if patient is None:
            try:
                parsed = parse_patch_path(relative)
                patient, x, y = parsed.patient_id, parsed.x, parsed.y
            except BadPatchName:
                patient, x, y = "", 0, 0
        labels.append(label)
        patients.append(patient)
        xs.append(x or 0)
        ys.append(y or 0)
    if problems:
        raise InvalidInputError(
            f"{len(problems)} image(s) in {list_path} cannot be read, e.g. "
            + "; ".join(problems[:5])
        )
    meta = {"split": list_path.stem, "source": str(list_path), "mode": "file"}
    return PackedSplit.from_arrays(images, labels, patients, xs, ys, meta)


def _read_list(list_path: Path) -> list[tuple[str, int, str | None, int | None, int | None]]:
    rows: list[tuple[str, int, str | None, int | None, int | None]] = []
    try:
        if list_path.suffix.lower() == ".lst":
            for number, line in enumerate(list_path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 3:
                    raise InvalidInputError(
                        f"{list_path}:{number}: expected index<TAB>label<TAB>path"
                    )
                rows.append((fields[-1], _label(fields[1], list_path, number), None, None, None))
            return rows
        with open(list_path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise InvalidInputError(f"{list_path}: a CSV list needs columns path,label")
            for number, row in enumerate(reader, start=2):
                patient = row.get("patient_id") or None
                x = int(row["x"]) if row.get("x") else None
                y = int(row["y"]) if row.get("y") else None
                rows.append((row["path"], _label(row["label"], list_path, number), patient, x, y))
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{list_path} is not a text list ({exc})") from exc
    except ValueError as exc:
        raise InvalidInputError(f"{list_path}: {exc}") from exc
    return rows


def _label(text: str, list_path: Path, number: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value not in (0.0, 1.0):
        raise InvalidInputError(f"{list_path}:{number}: label {text!r} is not 0 or 1")
    return int(value)
