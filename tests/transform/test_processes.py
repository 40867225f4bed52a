"""Transform jobs in their own process: kill and resume, the CLI, the client, the SDK, Ray."""

from __future__ import annotations

import csv
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bcd import registry
from bcd.cli.main import build_app
from bcd.clients import Client
from bcd.config import Settings
from bcd.errors import JobFailedError
from bcd.sdk import Model, Transformer
from bcd.testing import make_synthetic_tree
from bcd.transform import TransformJobService, run_job

Request = Callable[..., dict[str, Any]]


def _wait(service: TransformJobService, name: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = service.describe(name)
        if job["TransformJobStatus"] not in ("InProgress", "Stopping"):
            return job
        assert time.monotonic() < deadline, f"{name} did not end: {job}"
        time.sleep(0.2)


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_killed_job_fails_resumably_and_a_recreate_resumes_it(
    settings: Settings, request_for: Request, tmp_path: Path
) -> None:
    root = tmp_path / "big"
    make_synthetic_tree(root, n_patients=4, patches_per_patient=500, seed=7)
    request = request_for("killed", root, BatchStrategy="SingleRecord")
    service = TransformJobService(settings)
    service.create(request)
    deadline = time.monotonic() + 120
    while service.describe("killed")["Progress"]["ChunksCompleted"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    from bcd.transform import _store

    worker = _store.get("killed", settings).worker
    assert worker is not None
    os.kill(int(worker.rsplit(":", 2)[1]), signal.SIGKILL)
    job = _wait(service, "killed")
    assert job["TransformJobStatus"] == "Failed", job
    assert "bcd transform resume killed" in job["FailureReason"]
    out = tmp_path / "out-killed"
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "chunks").glob("*.json")}
    assert 1 <= len(kept) < job["Progress"]["ChunksTotal"]

    service.create(request)  # the same request again resumes the job
    job = _wait(service, "killed")
    assert job["TransformJobStatus"] == "Completed", job
    assert {name: (out / "chunks" / name).stat().st_mtime_ns for name in kept} == kept
    assert [int(row["index"]) for row in _rows(out)] == list(range(2000))


def test_cli_create_shows_progress_and_writes_results(
    settings: Settings,
    patch_folder: tuple[Path, dict[str, str]],
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    app = build_app()
    out = tmp_path / "cli-out"
    monkeypatch.chdir(tmp_path)  # relative paths are the caller's, not the job process's
    result = runner.invoke(
        app,
        [
            "transform",
            "create",
            "cli-job",
            "--model",
            str(tiny_model),
            "--input",
            patch_folder[0].name,
            "--output",
            "cli-out",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output and "results.csv" in result.output
    assert len(_rows(out)) == 126
    listed = runner.invoke(app, ["transform", "list"])
    assert "cli-job" in listed.output and "Completed" in listed.output
    rows = list(
        csv.DictReader(runner.invoke(app, ["transform", "list", "-o", "csv"]).output.splitlines())
    )
    assert [(row["TransformJobName"], row["TransformJobStatus"]) for row in rows] == [
        ("cli-job", "Completed")
    ]
    described = runner.invoke(app, ["transform", "describe", "cli-job", "--output", "json"])
    assert '"TransformJobStatus": "Completed"' in described.output
    again = runner.invoke(app, ["transform", "resume", "cli-job"])
    assert again.exit_code == 5 and "Completed" in again.output
    missing = runner.invoke(app, ["transform", "describe", "nope"])
    assert missing.exit_code == 4


def test_client_creates_waits_and_stops(
    settings: Settings, request_for: Request, tmp_path: Path
) -> None:
    client = Client(settings=settings)
    root = tmp_path / "client-tree"
    make_synthetic_tree(root, n_patients=2, patches_per_patient=40)
    response = client.create_transform_job(**request_for("client-job", root))
    assert response["TransformJobArn"].endswith("transform-job/client-job")
    job = client.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="client-job", WaiterConfig={"Delay": 0.2, "MaxAttempts": 600}
    )
    assert job["TransformJobStatus"] == "Completed"
    summaries = client.list_transform_jobs(SortOrder="Ascending")["TransformJobSummaries"]
    assert [s["TransformJobName"] for s in summaries] == ["client-job"]
    with pytest.raises(Exception, match="ended"):
        client.stop_transform_job(TransformJobName="client-job")

    client.create_transform_job(**request_for("fail-job", root, ModelName="missing-model"))
    with pytest.raises(JobFailedError, match="missing-model"):
        client.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName="fail-job", WaiterConfig={"Delay": 0.2, "MaxAttempts": 600}
        )


def test_sdk_transformer_and_model_transformer(
    settings: Settings, patch_folder: tuple[Path, dict[str, str]], tiny_model: Path, tmp_path: Path
) -> None:
    registry.create_model("tiny", model_data=str(tiny_model), settings=settings)
    transformer = Transformer(
        "tiny", 1, "ml.m5.xlarge", output_path=str(tmp_path / "sdk-out"), settings=settings
    )
    transformer.transform(str(patch_folder[0]), content_type="application/x-image", wait=True)
    assert transformer.latest_transform_job is not None
    assert transformer.describe()["TransformJobStatus"] == "Completed"
    assert len(_rows(tmp_path / "sdk-out")) == 126

    model_transformer = Model(name="tiny", settings=settings).transformer(
        instance_count=1, instance_type="ml.m5.xlarge", accept="application/json"
    )
    model_transformer.transform(str(patch_folder[0]), job_name="from-model")
    assert Path(model_transformer.output_path or "", "results.json").is_file()
    attached = Transformer.attach("from-model", settings=settings)
    assert attached.model_name == "tiny" and attached.accept == "application/json"


def test_ray_executor_gives_the_local_results(
    settings: Settings,
    patch_folder: tuple[Path, dict[str, str]],
    request_for: Request,
    tmp_path: Path,
    ray_address: str,
) -> None:
    # The session's Ray cluster is already connected in this process; the job uses it.
    root = tmp_path / "ray-tree"
    make_synthetic_tree(root, n_patients=2, patches_per_patient=150, seed=9)
    service = TransformJobService(settings)
    service.create(request_for("local-run", root), start=False)
    assert run_job("local-run", settings) == "Completed"
    service.create(
        request_for(
            "ray-run",
            root,
            Environment={"BCD_EXECUTOR": "ray"},
            TransformResources={"InstanceCount": 2},
        ),
        start=False,
    )
    assert run_job("ray-run", settings) == "Completed"
    job = service.describe("ray-run")
    assert job["Executor"] == "ray" and job["Progress"]["ChunksCompleted"] == 3
    local_rows = _rows(tmp_path / "out-local-run")
    ray_rows = _rows(tmp_path / "out-ray-run")
    assert ray_rows == local_rows
