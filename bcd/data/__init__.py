"""The data layer: import, validate, split by patient, pack, stream, export, explore.

Public API (the CLI, training jobs and clients use these)::

    import_dataset(source, name, ...) -> ImportReport
    split_dataset(name, SplitSpec(...)) -> per-split counts
    open_split(name, split) / open_channel(uri) -> PackedSplit
    list_datasets(), describe_dataset(name), delete_dataset(name)
    dataset_stats(name), render_grid(name, path), render_mosaic(name, patient, path)
    export_dataset(name, out, format="imagefolder" | "lst")
    collect_garbage(dry_run=False) -> GcReport   # leftovers of interrupted imports

The torch dataset over packed shards is in :mod:`bcd.data.stream` (imports torch).
"""

from __future__ import annotations

from typing import Any

from bcd.config import Settings
from bcd.data._catalog import delete_dataset, describe, get_record, list_datasets
from bcd.data._channels import open_channel, open_split, read_file_mode
from bcd.data._decode import PAD_VALUE, decode_patch
from bcd.data._explore import dataset_stats, render_grid, render_mosaic
from bcd.data._export import EXPORT_FORMATS, export_dataset
from bcd.data._gc import GcReport, Leftover, collect_garbage
from bcd.data._importer import ImportReport, import_dataset, read_import_report
from bcd.data._packed import PackedSplit
from bcd.data._patch_names import PATCH_SIZE, PatchName, parse_patch_path
from bcd.data._split import SPLIT_NAMES, SplitSpec, parse_fractions, split_dataset

__all__ = [
    "EXPORT_FORMATS",
    "PAD_VALUE",
    "PATCH_SIZE",
    "SPLIT_NAMES",
    "GcReport",
    "ImportReport",
    "Leftover",
    "PackedSplit",
    "PatchName",
    "SplitSpec",
    "collect_garbage",
    "dataset_stats",
    "decode_patch",
    "delete_dataset",
    "describe_dataset",
    "export_dataset",
    "import_dataset",
    "list_datasets",
    "open_channel",
    "open_split",
    "parse_fractions",
    "parse_patch_path",
    "read_file_mode",
    "read_import_report",
    "render_grid",
    "render_mosaic",
    "split_dataset",
]


def describe_dataset(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """The catalog entry of dataset ``name`` as a dict (counts, splits, fingerprint).

    Raises:
        NotFoundError: When no such dataset exists.
    """
    return describe(get_record(name, settings))
