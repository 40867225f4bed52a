"""A transform job's output folder: the plan, one file per chunk, the assembled results.

Layout (local folder or fsspec URL)::

    plan.json               the input plan and what produced it (model, identity)
    chunks/00000.json       the records of chunk 0, written once it is scored
    slides/<name>/…         per slide: heatmap, maps, report.json (slide inputs)
    results.csv|json        every record in input order (by TransformOutput.Accept)
    summary.json            counts, model, timings

A chunk file appears whole or not at all: it is written under a temporary
name and renamed. A resumed job therefore trusts every chunk file it finds.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from typing import Any

from bcd.errors import ConflictError

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
SUMMARY_FILE = "summary.json"
CHUNKS = "chunks"
PATCH_COLUMNS = (
    "index",
    "source",
    "status",
    "reason",
    "probability_idc",
    "predicted_class",
    "cancer_detected",
    "message",
    "patient_id",
    "x",
    "y",
    "label",
)
SLIDE_COLUMNS = (
    "index",
    "source",
    "status",
    "reason",
    "cancer_detected",
    "message",
    "tissue_tiles",
    "idc_positive_tiles",
    "idc_positive_fraction",
    "idc_area_mm2",
    "tissue_area_mm2",
    "threshold",
    "report",
)


class OutputFolder:
    """Reads and writes a transform job's output folder.

    Args:
        url: A local folder or an fsspec URL.
        storage_options: fsspec options of remote URLs (``Settings.storage_options()``).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")

    @property
    def is_local(self) -> bool:
        """Whether the folder is on this machine's file system."""
        return "file" in self.fs.protocol or "local" in self.fs.protocol

    def path(self, *parts: str) -> str:
        """The full path of a file of the folder."""
        return "/".join([self.root, *parts])

    def _write_atomic(self, relative: str, data: bytes) -> None:
        target = self.path(relative)
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        staging = f"{parent}/.{uuid.uuid4().hex[:12]}.partial"
        self.fs.pipe_file(staging, data)
        self.fs.mv(staging, target)

    def read_json(self, relative: str) -> Any:
        """A JSON file of the folder, or ``None`` when absent."""
        target = self.path(relative)
        if not self.fs.exists(target):
            return None
        return json.loads(self.fs.cat_file(target))

    def claim(self, plan: dict[str, Any]) -> None:
        """Write ``plan.json``, or check that the one there describes the same work.

        Raises:
            ConflictError: The folder holds results of other work (another
                input, model or chunking).
        """
        existing = self.read_json(PLAN_FILE)
        if existing is None:
            self._write_atomic(PLAN_FILE, json.dumps(plan).encode())
            return
        keys = ("kind", "identity", "chunk_records", "count", "model_sha256", "threshold")
        changed = [key for key in keys if existing.get(key) != plan.get(key)]
        if changed:
            raise ConflictError(
                f"{self.url} holds results of another transform (its {', '.join(changed)} "
                "differ); choose another output folder or empty this one"
            )

    def done_chunks(self) -> set[int]:
        """Indices of the chunks whose results are written."""
        folder = self.path(CHUNKS)
        if not self.fs.exists(folder):
            return set()
        done = set()
        for entry in self.fs.ls(folder, detail=False):
            name = str(entry).rsplit("/", 1)[-1]
            if name.endswith(".json") and name[:-5].isdigit():
                done.add(int(name[:-5]))
        return done

    def write_chunk(self, index: int, records: list[dict[str, Any]]) -> None:
        """Store the records of chunk ``index`` (atomically)."""
        self._write_atomic(f"{CHUNKS}/{index:05d}.json", json.dumps(records).encode())

    def read_chunk(self, index: int) -> list[dict[str, Any]]:
        """The records of chunk ``index``."""
        return json.loads(self.fs.cat_file(self.path(CHUNKS, f"{index:05d}.json")))  # type: ignore[no-any-return]

    def assemble(
        self, chunk_count: int, results_file: str, columns: tuple[str, ...]
    ) -> dict[str, int]:
        """Write the results file from every chunk, in input order.

        Returns:
            ``{"records", "failed"}`` counts.
        """
        records: list[dict[str, Any]] = []
        for index in range(chunk_count):
            records.extend(self.read_chunk(index))
        if results_file.endswith(".csv"):
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(
                {key: "" if value is None else value for key, value in record.items()}
                for record in records
            )
            data = text.getvalue().encode()
        else:
            data = json.dumps(records, indent=1).encode()
        self._write_atomic(results_file, data)
        failed = sum(1 for record in records if record["status"] != "ok")
        return {"records": len(records), "failed": failed}

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json``."""
        self._write_atomic(SUMMARY_FILE, json.dumps(summary, indent=2).encode())

    def put_folder(self, local: str, relative: str) -> str:
        """Copy a local folder into the output (slide outputs); returns its URL."""
        target = self.path(relative)
        if self.is_local:
            return target
        self.fs.put(local.rstrip("/") + "/", target, recursive=True)
        return target
