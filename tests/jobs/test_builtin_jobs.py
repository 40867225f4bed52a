"""Built-in algorithms and the example script run as real jobs (the trainer in a child process).

The default test trains the small CNN for one epoch on synthetic patches; the
``slow`` tests train on real patients of ../shared/data (patient-level split).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcd.config import Settings
from bcd.jobs import TrainingJobService, get_metric_series, plot_training_curves, read_log

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
ALL_METRICS = (
    "train:loss",
    "train:accuracy",
    "validation:loss",
    "validation:accuracy",
    "validation:auc",
    "validation:bac",
    "validation:f1",
)


def _builtin_request(name: str, algorithm: str, dataset: str, **hyperparameters: Any) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"AlgorithmName": algorithm, "TrainingInputMode": "File"},
        "HyperParameters": {key: str(value) for key, value in hyperparameters.items()},
        "InputDataConfig": [
            {"ChannelName": "train", "Uri": f"dataset://{dataset}/train"},
            {"ChannelName": "validation", "Uri": f"dataset://{dataset}/validation"},
        ],
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


def _assert_complete_model_job(job: dict, settings: Settings, epochs: int) -> None:
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    final = {item["MetricName"] for item in job["FinalMetricDataList"]}
    assert set(ALL_METRICS) <= final
    for metric in ALL_METRICS:
        series = get_metric_series(job["TrainingJobName"], metric, settings)
        assert [point.epoch for point in series] == list(range(1, epochs + 1)), metric
    model = Path(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert {"model.onnx", "model.pt", "model.json"} <= {path.name for path in model.iterdir()}
    info = json.loads((model / "model.json").read_text())
    assert info["algorithm"] == job["AlgorithmSpecification"]["AlgorithmName"]


def test_cnn_job_on_synthetic_patches(
    service: TrainingJobService,
    wait: Callable[..., dict],
    job_settings: Settings,
    tmp_path: Path,
) -> None:
    from bcd.testing import make_synthetic_dataset

    make_synthetic_dataset("syn", job_settings, n_patients=6, patches_per_patient=20)
    service.create(_builtin_request("cnn-syn", "cnn", "syn", epochs=1, mini_batch_size=32))
    job = wait("cnn-syn", timeout_s=240)
    _assert_complete_model_job(job, job_settings, epochs=1)
    png = plot_training_curves("cnn-syn", tmp_path / "curves.png", job_settings)
    assert png.stat().st_size > 10_000


def test_a_student_job_distils_from_a_teacher_job(
    service: TrainingJobService, wait: Callable[..., dict], job_settings: Settings
) -> None:
    from bcd.errors import InvalidInputError
    from bcd.testing import make_synthetic_dataset

    make_synthetic_dataset("dist", job_settings, n_patients=6, patches_per_patient=20)
    with pytest.raises(InvalidInputError, match="is neither a model folder"):
        service.create(_builtin_request("student-0", "cnn", "dist", teacher="no-such-job"))
    service.create(_builtin_request("teacher-1", "cnn", "dist", epochs=1, mini_batch_size=32))
    wait("teacher-1", timeout_s=240)
    service.create(
        _builtin_request(
            "student-1", "cnn", "dist", epochs=1, mini_batch_size=32, teacher="teacher-1"
        )
    )
    job = wait("student-1", timeout_s=240)
    _assert_complete_model_job(job, job_settings, epochs=1)
    log = "\n".join(read_log("student-1", job_settings))
    assert "training patches with the teacher" in log


# -- real data (slow) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_home(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """One BCD_HOME per module with 16 real patients imported and split by patient."""
    from bcd.data import SplitSpec, import_dataset
    from bcd.testing import copy_real_patients

    home = tmp_path_factory.mktemp("real-home")
    patients = sorted(path.name for path in shared_data.iterdir() if path.is_dir())[:16]
    tree = copy_real_patients(shared_data, tmp_path_factory.mktemp("tree") / "idc", patients)
    import_dataset(
        tree, "idc", settings=Settings(home=home), split=SplitSpec((0.75, 0.25), 42), workers=0
    )
    return home


@pytest.fixture
def real_settings(real_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("BCD_HOME", str(real_home))
    return Settings(home=real_home, job_stop_grace_s=20.0, job_sample_interval_s=2.0)


def _wait_real(service: TrainingJobService, name: str, timeout_s: float = 1800) -> dict:
    from .conftest import wait_until

    return wait_until(service, name, timeout_s=timeout_s)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "hyperparameters"),
    [
        ("cnn", {"epochs": 3, "mini_batch_size": 128}),
        ("image-classification", {"num_layers": 18, "epochs": 2, "mini_batch_size": 128}),
    ],
    ids=["cnn", "resnet18"],
)
def test_builtin_algorithm_on_real_patients(
    algorithm: str, hyperparameters: dict, real_settings: Settings, tmp_path: Path
) -> None:
    service = TrainingJobService(real_settings)
    name = f"real-{algorithm}"
    service.create(_builtin_request(name, algorithm, "idc", **hyperparameters))
    job = _wait_real(service, name)
    _assert_complete_model_job(job, real_settings, epochs=hyperparameters["epochs"])
    assert plot_training_curves(name, tmp_path / f"{name}.png", real_settings).is_file()
    assert get_metric_series(name, "CPUUtilization", real_settings)


@pytest.mark.slow
def test_two_instance_cnn_job_on_real_patients(real_settings: Settings) -> None:
    service = TrainingJobService(real_settings)
    request = _builtin_request("real-cnn-2", "cnn", "idc", epochs=2, mini_batch_size=64)
    request["ResourceConfig"] = {"InstanceCount": 2}
    service.create(request)
    job = _wait_real(service, "real-cnn-2")
    _assert_complete_model_job(job, real_settings, epochs=2)
    log = read_log("real-cnn-2", real_settings)
    assert any(line.startswith("[algo-2]") for line in log)


@pytest.mark.slow
def test_example_script_runs_in_script_mode(real_settings: Settings) -> None:
    definitions = json.loads((ROOT / "examples/scripts/metric_definitions.json").read_text())
    service = TrainingJobService(real_settings)
    service.create(
        {
            "TrainingJobName": "real-script",
            "AlgorithmSpecification": {"AlgorithmName": "script", "MetricDefinitions": definitions},
            "HyperParameters": {
                "sagemaker_program": "train_cnn.py",
                "sagemaker_submit_directory": str(ROOT / "examples/scripts"),
                "epochs": "2",
            },
            "InputDataConfig": [
                {"ChannelName": "train", "Uri": "dataset://idc/train"},
                {"ChannelName": "validation", "Uri": "dataset://idc/validation"},
            ],
        }
    )
    job = _wait_real(service, "real-script")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    final = {item["MetricName"] for item in job["FinalMetricDataList"]}
    assert {"validation:bac", "validation:auc", "train:loss"} <= final


@pytest.mark.slow
def test_stop_and_max_runtime_on_a_real_cnn_job(real_settings: Settings) -> None:
    service = TrainingJobService(real_settings)
    service.create(_builtin_request("real-stop", "cnn", "idc", epochs=50, checkpoint_frequency=1))
    request = _builtin_request("real-timeout", "cnn", "idc", epochs=50)
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 40}
    service.create(request)
    from .conftest import wait_until

    wait_until(
        service,
        "real-stop",
        lambda job: len(get_metric_series("real-stop", "validation:bac", real_settings)) >= 1,
        timeout_s=600,
    )
    service.stop("real-stop")
    stopped = _wait_real(service, "real-stop")
    assert stopped["TrainingJobStatus"] == "Stopped"
    checkpoints = Path(stopped["CheckpointConfig"]["S3Uri"])
    assert any(checkpoints.iterdir()), "the last checkpoint is kept"
    timed_out = _wait_real(service, "real-timeout")
    assert timed_out["TrainingJobStatus"] == "Stopped"
    assert timed_out["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert os.path.isdir(checkpoints)


@pytest.mark.slow
def test_a_corrupt_checkpoint_fails_the_job_with_a_reason(
    real_settings: Settings, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "checkpoint-epoch0003.pt").write_bytes(b"not a checkpoint at all")
    service = TrainingJobService(real_settings)
    request = _builtin_request("real-corrupt", "cnn", "idc", epochs=5)
    request["CheckpointConfig"] = {"S3Uri": str(checkpoints)}
    service.create(request)
    job = _wait_real(service, "real-corrupt", timeout_s=600)
    assert job["TrainingJobStatus"] == "Failed"
    assert "checkpoint" in job["FailureReason"].lower()
