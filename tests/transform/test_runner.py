"""Transform jobs run in this process: inputs, results, bad files, stop and resume."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bcd.config import Settings
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from bcd.serving import ModelRuntime
from bcd.testing import make_synthetic_dataset, make_synthetic_tree
from bcd.transform import TransformJobService, run_job
from bcd.transform._outputs import OutputFolder

Request = Callable[..., dict[str, Any]]


def _results_csv(path: Path) -> list[dict[str, str]]:
    with open(path / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_patch_folder_is_scored_and_bad_files_are_reported(
    store_settings: Settings,
    patch_folder: tuple[Path, dict[str, str]],
    request_for: Request,
    tiny_model: Path,
) -> None:
    root, bad = patch_folder
    service = TransformJobService(store_settings)
    service.create(request_for("folder-job", root), start=False)
    assert run_job("folder-job", store_settings) == "Completed"

    job = service.describe("folder-job")
    out = Path(job["TransformOutput"]["S3OutputPath"])
    rows = _results_csv(out)
    failed = {row["source"]: row["reason"] for row in rows if row["status"] == "failed"}
    # Undecodable files fail with the decoder's reason; odd names are still scored.
    assert set(failed) == {
        name for name, why in bad.items() if why not in ("does not match", "disagrees")
    }
    assert all(reason for reason in failed.values())
    assert job["TransformJobStatus"] == "Completed"
    assert job["Results"] == str(out / "results.csv")
    assert job["Progress"]["RecordsTotal"] == len(rows) == job["Progress"]["RecordsCompleted"]
    assert job["Progress"]["RecordsFailed"] == len(failed)
    assert [int(row["index"]) for row in rows] == list(range(len(rows)))

    # Each probability is what the serving runtime gives for that file.
    from bcd.data import decode_patch

    ok = [row for row in rows if row["status"] == "ok"][:20]
    images = np.stack([decode_patch((root / row["source"]).read_bytes())[0] for row in ok])
    runtime = ModelRuntime(tiny_model)
    try:
        expected = runtime.predict(list(images))[:, 1]
    finally:
        runtime.close()
    assert np.allclose([float(row["probability_idc"]) for row in ok], expected, atol=1e-6)
    assert all(
        row["message"]
        == ("Cancer detected" if row["predicted_class"] == "1" else "Cancer not detected")
        for row in ok
    )
    named = [row for row in ok if row["patient_id"]]
    assert named and all(row["label"] in ("0", "1") for row in named)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == len(rows) and summary["failed"] == len(failed)


def test_a_dataset_split_is_scored_in_order_with_its_labels(
    settings: Settings, request_for: Request, tmp_path: Path
) -> None:
    make_synthetic_dataset("tx", settings=settings, n_patients=4, patches_per_patient=60)
    from bcd.data import open_split

    split = open_split("tx", "all", settings)
    service = TransformJobService(settings)
    request = request_for(
        "dataset-job",
        "dataset://tx/all",
        TransformOutput={"S3OutputPath": str(tmp_path / "ds-out"), "Accept": "application/json"},
    )
    service.create(request, start=False)
    assert run_job("dataset-job", settings) == "Completed"
    records = json.loads((tmp_path / "ds-out" / "results.json").read_text())
    assert len(records) == len(split) == service.describe("dataset-job")["Progress"]["RecordsTotal"]
    assert [r["label"] for r in records] == split.labels.tolist()
    assert [r["patient_id"] for r in records] == split.patient_ids.tolist()
    assert all(r["status"] == "ok" for r in records)
    assert (
        len(OutputFolder(str(tmp_path / "ds-out")).done_chunks()) == 2
    )  # 240 patches, 139 a chunk


def test_a_stopped_job_resumes_without_rescoring_finished_chunks(
    settings: Settings, request_for: Request, tmp_path: Path
) -> None:
    root = tmp_path / "many"
    make_synthetic_tree(root, n_patients=3, patches_per_patient=200, seed=5)
    service = TransformJobService(settings)
    service.create(request_for("resume-job", root), start=False)
    out = tmp_path / "out-resume-job"
    stop = threading.Event()
    written: list[int] = []
    original = OutputFolder.write_chunk

    def write_then_stop(self: OutputFolder, index: int, records: list[dict[str, Any]]) -> None:
        original(self, index, records)
        written.append(index)
        if len(written) == 2:
            stop.set()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OutputFolder, "write_chunk", write_then_stop)
        assert run_job("resume-job", settings, stop) == "Stopped"
    job = service.describe("resume-job")
    assert job["TransformJobStatus"] == "Stopped"
    assert job["Progress"]["ChunksCompleted"] == 2 < job["Progress"]["ChunksTotal"]
    assert not (out / "results.csv").exists()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "chunks").iterdir()}

    service.resume("resume-job", start=False)
    assert run_job("resume-job", settings) == "Completed"
    job = service.describe("resume-job")
    assert job["Progress"]["ChunksCompleted"] == job["Progress"]["ChunksTotal"] == 5
    assert job["Progress"]["RecordsCompleted"] == job["Progress"]["RecordsTotal"] == 600
    assert {
        p.name: p.stat().st_mtime_ns for p in (out / "chunks").iterdir() if p.name in first
    } == first
    rows = _results_csv(out)
    assert [int(row["index"]) for row in rows] == list(range(600))
    with pytest.raises(ConflictError, match="Completed"):
        service.resume("resume-job")


def test_a_stop_request_ends_the_job_stopped(
    settings: Settings, patch_folder: tuple[Path, dict[str, str]], request_for: Request
) -> None:
    service = TransformJobService(settings)
    service.create(request_for("stop-job", patch_folder[0]), start=False)
    service.stop("stop-job")
    assert service.describe("stop-job")["TransformJobStatus"] == "Stopping"
    assert run_job("stop-job", settings) == "Stopped"
    with pytest.raises(ConflictError, match="ended"):
        service.stop("stop-job")


def test_slides_get_one_summary_each_and_a_broken_slide_fails_alone(
    settings: Settings, slide_folder: Path, request_for: Request, tmp_path: Path
) -> None:
    service = TransformJobService(settings)
    request = request_for("slide-job", slide_folder)
    request["TransformInput"]["ContentType"] = "application/x-slide"
    service.create(request, start=False)
    assert run_job("slide-job", settings) == "Completed"
    out = tmp_path / "out-slide-job"
    rows = {row["source"]: row for row in _results_csv(out)}
    assert rows["a-tumour.png"]["status"] == "ok"
    assert rows["a-tumour.png"]["cancer_detected"] == "True"
    assert int(rows["a-tumour.png"]["idc_positive_tiles"]) > 0
    assert rows["b-benign.png"]["cancer_detected"] == "False"
    assert rows["c-broken.png"]["status"] == "failed" and rows["c-broken.png"]["reason"]
    report = json.loads((out / rows["a-tumour.png"]["report"]).read_text())
    assert report["tiles"]["idc_positive"] == int(rows["a-tumour.png"]["idc_positive_tiles"])
    assert service.describe("slide-job")["Progress"]["InputKind"] == "slides"


def test_an_output_folder_of_other_work_is_refused(
    settings: Settings,
    patch_folder: tuple[Path, dict[str, str]],
    request_for: Request,
    slide_folder: Path,
    tmp_path: Path,
) -> None:
    service = TransformJobService(settings)
    output = {"S3OutputPath": str(tmp_path / "shared-out")}
    service.create(request_for("first", patch_folder[0], TransformOutput=output), start=False)
    assert run_job("first", settings) == "Completed"
    service.create(request_for("second", slide_folder, TransformOutput=output), start=False)
    assert run_job("second", settings) == "Failed"
    reason = service.describe("second")["FailureReason"]
    assert reason.startswith("ClientError:") and "another output folder" in reason


def test_recreating_a_stopped_job_resumes_it_and_a_completed_one_conflicts(
    settings: Settings, patch_folder: tuple[Path, dict[str, str]], request_for: Request
) -> None:
    service = TransformJobService(settings)
    request = request_for("again", patch_folder[0])
    service.create(request, start=False)
    service.stop("again")
    assert run_job("again", settings) == "Stopped"
    assert service.create(request, start=False) == "again"
    assert service.describe("again")["TransformJobStatus"] == "InProgress"
    assert run_job("again", settings) == "Completed"
    with pytest.raises(ConflictError, match="already exists"):
        service.create(request, start=False)
    with pytest.raises(ConflictError):
        service.create({**request, "MaxPayloadInMB": 2}, start=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TransformJobName": "bad_name"}, "transform job name"),
        ({"ModelName": ""}, "ModelName"),
        ({"TransformInput": {"DataSource": {}}}, "S3Uri"),
        ({"TransformOutput": {}}, "S3OutputPath"),
        ({"BatchStrategy": "Everything"}, "BatchStrategy"),
        ({"MaxPayloadInMB": 0}, "MaxPayloadInMB"),
        ({"TransformResources": {"InstanceCount": 0}}, "InstanceCount"),
        ({"Environment": {"BCD_EXECUTOR": "spark"}}, "executor"),
        ({"Bogus": 1}, "unknown keys"),
    ],
    ids=["name", "model", "input", "output", "strategy", "payload", "instances", "executor", "key"],
)
def test_bad_requests_are_refused_before_anything_is_recorded(
    settings: Settings, request_for: Request, tmp_path: Path, change: dict, message: str
) -> None:
    service = TransformJobService(settings)
    request = {**request_for("bad", tmp_path), **change}
    with pytest.raises(InvalidInputError, match=message):
        service.create(request, start=False)
    assert service.list_jobs() == []


def test_bad_content_types_split_types_and_inputs_are_refused(
    settings: Settings, request_for: Request, tmp_path: Path
) -> None:
    service = TransformJobService(settings)
    for transform_input, message in (
        ({"ContentType": "text/plain"}, "ContentType"),
        ({"SplitType": "Line"}, "SplitType"),
    ):
        request = request_for("bad", tmp_path)
        request["TransformInput"].update(transform_input)
        with pytest.raises(InvalidInputError, match=message):
            service.create(request, start=False)
    with pytest.raises(InvalidInputError, match="does not exist"):
        service.create(request_for("bad", tmp_path / "missing"), start=False)
    with pytest.raises(NotFoundError):
        service.describe("never")


def test_an_unknown_model_fails_the_job_with_a_reason(
    settings: Settings, patch_folder: tuple[Path, dict[str, str]], request_for: Request
) -> None:
    service = TransformJobService(settings)
    service.create(request_for("no-model", patch_folder[0], ModelName="nope"), start=False)
    assert run_job("no-model", settings) == "Failed"
    assert "neither a model folder" in service.describe("no-model")["FailureReason"]


def test_list_filters_and_sorts(
    settings: Settings, patch_folder: tuple[Path, dict[str, str]], request_for: Request
) -> None:
    service = TransformJobService(settings)
    for name in ("list-a", "list-b"):
        service.create(request_for(name, patch_folder[0]), start=False)
    assert run_job("list-a", settings) == "Completed"
    names = [job["TransformJobName"] for job in service.list_jobs()]
    assert names == ["list-b", "list-a"]
    assert [j["TransformJobName"] for j in service.list_jobs(status_equals="Completed")] == [
        "list-a"
    ]
    assert [j["TransformJobName"] for j in service.list_jobs(sort_by="Name", ascending=True)] == [
        "list-a",
        "list-b",
    ]
    with pytest.raises(InvalidInputError, match="SortBy"):
        service.list_jobs(sort_by="Size")
