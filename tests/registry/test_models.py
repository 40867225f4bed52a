"""Models: sources, artifact validation, names, deletion rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bcd.jobs
import bcd.tuning
from bcd import registry
from bcd.config import Settings
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from tests.registry.helpers import MODEL_JSON, variant, write_artifact


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """Every test of this module runs on a SQLite and on a PostgreSQL store."""
    return store_settings


def test_create_from_folder_stores_url_and_model_json(
    artifact: Callable[..., Path], settings: Settings
) -> None:
    folder = artifact("a")
    result = registry.create_model("m1", model_data=str(folder), settings=settings)
    assert result == {"ModelName": "m1", "ModelArn": "arn:bcd:sagemaker:local:model/m1"}
    described = registry.describe_model("m1", settings=settings)
    assert described["PrimaryContainer"]["ModelDataUrl"] == str(folder.resolve())
    assert described["ModelMetadata"] == json.loads((folder / "model.json").read_text())
    assert described["ModelSource"] == {"Type": "path"}
    assert described["OnnxBytes"] == (folder / "model.onnx").stat().st_size
    assert described["CreationTime"].tzinfo is not None


def test_relative_and_file_urls_are_stored_absolute(
    artifact: Callable[..., Path], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = artifact("a")
    monkeypatch.chdir(folder.parent)
    registry.create_model("rel", model_data="a", settings=settings)
    registry.create_model("url", model_data=f"file://{folder}", settings=settings)
    for name in ("rel", "url"):
        url = registry.describe_model(name, settings=settings)["PrimaryContainer"]["ModelDataUrl"]
        assert url == str(folder.resolve())


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in MODEL_JSON.items() if k != key}


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        pytest.param(_without("input"), "'input'", id="no-input"),
        pytest.param(_without("class_names"), "class_names", id="no-class-names"),
        pytest.param(_without("onnx"), "'onnx'", id="no-onnx"),
        pytest.param({**MODEL_JSON, "format_version": 2}, "format_version", id="version"),
        pytest.param(
            {**MODEL_JSON, "input": {**MODEL_JSON["input"], "shape": [3, 50]}},
            "input.shape",
            id="shape",
        ),
        pytest.param(
            {**MODEL_JSON, "input": {**MODEL_JSON["input"], "mean": [0.5]}},
            "input.mean",
            id="mean-length",
        ),
        pytest.param(
            {**MODEL_JSON, "input": {**MODEL_JSON["input"], "std": [0.1, 0.0, 0.1]}},
            "std",
            id="zero-std",
        ),
        pytest.param({**MODEL_JSON, "temperature": 0}, "temperature", id="temperature"),
        pytest.param(
            {**MODEL_JSON, "onnx": {**MODEL_JSON["onnx"], "file": "../x.onnx"}},
            "onnx.file",
            id="escaping-file",
        ),
        pytest.param([1, 2], "JSON object", id="not-object"),
    ],
)
def test_malformed_model_json_is_refused(
    tmp_path: Path, settings: Settings, document: Any, fragment: str
) -> None:
    folder = write_artifact(tmp_path / "bad")
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(InvalidInputError, match=fragment):
        registry.create_model("bad", model_data=str(folder), settings=settings)
    assert registry.list_models(settings=settings) == []


def test_unparsable_model_json_is_refused(tmp_path: Path, settings: Settings) -> None:
    folder = write_artifact(tmp_path / "bad")
    (folder / "model.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        registry.create_model("bad", model_data=str(folder), settings=settings)


@pytest.mark.parametrize(
    ("remove", "fragment"),
    [
        pytest.param(None, "no model artifact folder", id="no-folder"),
        pytest.param("model.json", "has no model.json", id="no-model-json"),
        pytest.param("model.onnx", "has no model.onnx", id="no-onnx"),
    ],
)
def test_missing_artifacts_are_refused(
    tmp_path: Path, settings: Settings, remove: str | None, fragment: str
) -> None:
    folder = tmp_path / "missing"
    if remove:
        write_artifact(folder)
        (folder / remove).unlink()
    with pytest.raises(NotFoundError, match=fragment):
        registry.create_model("m", model_data=str(folder), settings=settings)


def test_empty_onnx_file_is_refused(tmp_path: Path, settings: Settings) -> None:
    folder = write_artifact(tmp_path / "empty", onnx_bytes=b"")
    with pytest.raises(InvalidInputError, match="empty"):
        registry.create_model("m", model_data=str(folder), settings=settings)


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param({}, id="none"),
        pytest.param({"model_data": "x", "training_job": "j"}, id="two"),
    ],
)
def test_exactly_one_source(settings: Settings, sources: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match="exactly one model source"):
        registry.create_model("m", settings=settings, **sources)


@pytest.mark.parametrize("name", ["", "has space", "-lead", "x" * 64, "under_score"])
def test_bad_names_are_refused(
    artifact: Callable[..., Path], settings: Settings, name: str
) -> None:
    with pytest.raises(InvalidInputError, match="model name"):
        registry.create_model(name, model_data=str(artifact()), settings=settings)


def test_duplicate_name_conflicts(model: Callable[[str], str], settings: Settings) -> None:
    model("m1")
    with pytest.raises(ConflictError, match="exists already"):
        model("m1")


def test_unknown_model_lists_existing(model: Callable[[str], str], settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="none yet"):
        registry.describe_model("nope", settings=settings)
    model("alpha")
    model("beta")
    with pytest.raises(NotFoundError, match="existing: alpha, beta"):
        registry.describe_model("nope", settings=settings)


def test_list_filters_by_name(model: Callable[[str], str], settings: Settings) -> None:
    for name in ("cnn-a", "cnn-b", "resnet"):
        model(name)
    names = {row["ModelName"] for row in registry.list_models("cnn", settings=settings)}
    assert names == {"cnn-a", "cnn-b"}


def test_delete_refused_while_a_config_uses_it(
    model: Callable[[str], str], settings: Settings
) -> None:
    model("m1")
    registry.create_endpoint_config("c1", [variant("A", "m1")], settings=settings)
    with pytest.raises(ConflictError, match="c1"):
        registry.delete_model("m1", settings=settings)
    registry.delete_endpoint_config("c1", settings=settings)
    registry.delete_model("m1", settings=settings)
    with pytest.raises(NotFoundError):
        registry.describe_model("m1", settings=settings)
    model("m1")  # the name is free again


def _fake_job(status: str, url: str | None) -> Callable[..., dict[str, Any]]:
    def describe_training_job(name: str, settings: Settings | None = None) -> dict[str, Any]:
        if name != "job-1":
            raise NotFoundError(f"no training job named {name!r}")
        job: dict[str, Any] = {"TrainingJobName": name, "TrainingJobStatus": status}
        if url:
            job["ModelArtifacts"] = {"S3ModelArtifacts": url}
        return job

    return describe_training_job


def test_create_from_completed_training_job(
    artifact: Callable[..., Path], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = artifact("job-1")
    monkeypatch.setattr(bcd.jobs, "describe_training_job", _fake_job("Completed", str(folder)))
    registry.create_model("from-job", training_job="job-1", settings=settings)
    described = registry.describe_model("from-job", settings=settings)
    assert described["ModelSource"] == {"Type": "training-job", "TrainingJobName": "job-1"}
    assert described["PrimaryContainer"]["ModelDataUrl"] == str(folder)
    with pytest.raises(NotFoundError, match="no training job"):
        registry.create_model("other", training_job="job-2", settings=settings)


def test_unfinished_training_job_conflicts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bcd.jobs, "describe_training_job", _fake_job("InProgress", None))
    with pytest.raises(ConflictError, match="InProgress"):
        registry.create_model("m", training_job="job-1", settings=settings)


def test_create_from_tuning_job_uses_best_training_job(
    artifact: Callable[..., Path], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = artifact("job-1")
    monkeypatch.setattr(bcd.jobs, "describe_training_job", _fake_job("Completed", str(folder)))
    calls = []

    def best_training_job(name: str, settings: Settings | None = None) -> str:
        calls.append(name)
        return "job-1"

    monkeypatch.setattr(bcd.tuning, "best_training_job", best_training_job)
    registry.create_model("tuned", tuning_job="tune-1", settings=settings)
    assert calls == ["tune-1"]
    source = registry.describe_model("tuned", settings=settings)["ModelSource"]
    assert source == {"Type": "tuning-job", "HyperParameterTuningJobName": "tune-1"}


def test_remote_artifacts_via_fsspec(settings: Settings) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/m/model.json", json.dumps(MODEL_JSON).encode())
    fs.pipe("/bucket/m/model.onnx", b"remote-graph")
    try:
        registry.create_model("remote", model_data="memory://bucket/m", settings=settings)
        described = registry.describe_model("remote", settings=settings)
        assert described["PrimaryContainer"]["ModelDataUrl"] == "memory://bucket/m"
    finally:
        fs.rm("/bucket", recursive=True)
