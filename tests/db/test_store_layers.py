"""Each layer's records round-trip through the metadata store, on SQLite and on PostgreSQL.

The registry and job-store suites run on both backends themselves; these
cover the layers whose own suites use the SQLite file directly: the dataset
catalog and batch transform jobs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd import data
from bcd.config import Settings
from bcd.errors import ConflictError, NotFoundError
from bcd.testing import make_synthetic_dataset, make_synthetic_tree
from bcd.transform import TransformJobService, _store


def test_dataset_catalog_import_split_and_delete(store_settings: Settings) -> None:
    settings = store_settings
    make_synthetic_dataset("cat", settings=settings, n_patients=6, patches_per_patient=12)
    with pytest.raises(ConflictError):
        make_synthetic_dataset("cat", settings=settings, n_patients=6, patches_per_patient=12)
    described = data.describe_dataset("cat", settings)
    assert described["patches"] == 72 and set(described["splits"]) == {
        "train",
        "validation",
        "test",
    }
    assert [d["name"] for d in data.list_datasets(settings)] == ["cat"]
    splits = data.split_dataset("cat", data.SplitSpec((0.5, 0.5), 3), settings)
    assert set(splits) == {"train", "validation"}
    assert splits["train"]["patches"] + splits["validation"]["patches"] == 72
    assert set(data.describe_dataset("cat", settings)["splits"]) == {"train", "validation"}
    assert len(data.open_split("cat", "train", settings)) == splits["train"]["patches"]
    data.delete_dataset("cat", settings)
    with pytest.raises(NotFoundError):
        data.describe_dataset("cat", settings)


def test_transform_job_counters_and_terminal_status(
    store_settings: Settings, tmp_path: Path
) -> None:
    settings = store_settings
    root = make_synthetic_tree(tmp_path / "tree", n_patients=1, patches_per_patient=5)
    service = TransformJobService(settings)
    request = {
        "TransformJobName": "counted",
        "ModelName": "m",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": str(root)}}},
        "TransformOutput": {"S3OutputPath": str(tmp_path / "out")},
    }
    service.create(request, start=False)
    _store.set_progress("counted", settings, chunks_total=3, records_total=30)
    for _ in range(3):
        _store.chunk_finished("counted", settings, 10, 2)
    progress = service.describe("counted")["Progress"]
    assert (progress["ChunksCompleted"], progress["RecordsCompleted"]) == (3, 30)
    assert progress["RecordsFailed"] == 6
    assert _store.finish("counted", settings, "Completed") == "Completed"
    assert _store.finish("counted", settings, "Failed", "late") == "Completed"
    assert service.describe("counted").get("FailureReason") is None
    names = [job["TransformJobName"] for job in service.list_jobs(name_contains="count")]
    assert names == ["counted"]
    assert service.list_jobs(name_contains="%") == []
