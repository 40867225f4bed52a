"""The job engine end to end with small script-mode jobs (real processes, no torch).

A contract suite: every test runs once per executor (``local``, and ``ray`` on
the session's local Ray cluster; skipped with a reason when Ray is missing).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from bcd.jobs import TrainingJobService, get_metric_series, list_metric_names, read_log
from bcd.jobs.executors import EXECUTORS
from bcd.storage import artifact_store

from .conftest import gone, running_instances


@pytest.fixture(params=EXECUTORS)
def executor_name(request: pytest.FixtureRequest) -> str:
    """Run each test of this module against every executor."""
    return str(request.param)


def test_script_job_completes_with_metrics_artifacts_and_contract(
    service, script_request, wait, job_settings: Settings, train_dir: Path
) -> None:
    started = time.monotonic()
    service.create(script_request("ok-job", "train_ok.py", hyperparameters={"epochs": 3}))
    assert time.monotonic() - started < 10, "create must return without waiting for the job"
    job = wait("ok-job")

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    statuses = [item["Status"] for item in job["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in item for item in job["SecondaryStatusTransitions"][:-1])
    assert job["TrainingStartTime"] <= job["TrainingEndTime"]
    assert job["BillableTimeInSeconds"] >= 1
    final = {item["MetricName"]: item["Value"] for item in job["FinalMetricDataList"]}
    assert final == {
        "train:loss": pytest.approx(1 / (3 * 1.1), abs=1e-4),
        "validation:accuracy": pytest.approx(0.8),
    }

    series = get_metric_series("ok-job", "train:loss", job_settings)
    assert [point.epoch for point in series] == [1, 2, 3]
    assert [point.step for point in series] == [0, 1, 2]
    assert series[0].value > series[-1].value

    model_url = job["ModelArtifacts"]["S3ModelArtifacts"]
    store = artifact_store(job_settings)
    assert model_url == store.url("training-jobs/ok-job/output/model")
    assert store.read_bytes("training-jobs/ok-job/output/model/model.txt") == b"trained 3 epochs"
    assert store.read_bytes("training-jobs/ok-job/checkpoints/epoch.txt") == b"3"

    contract = json.loads(store.read_bytes("training-jobs/ok-job/output/data/env.json"))
    assert contract["SM_CHANNEL_TRAIN"] == str(train_dir.resolve())
    assert json.loads(contract["SM_HOSTS"]) == ["algo-1"]
    assert contract["SM_CURRENT_HOST"] == "algo-1"
    assert json.loads(contract["SM_HPS"]) == {"epochs": 3}
    assert json.loads(contract["SM_CHANNELS"]) == ["train"]
    assert contract["BCD_JOB_NAME"] == "ok-job"
    assert "MASTER_ADDR" not in contract
    # Script mode runs from a copy of the source folder.
    assert contract["cwd"].endswith("jobs/ok-job/code")
    # Where it ran, as describe shows it.
    assert job["Executor"]["Name"] == job_settings.executor
    [placement] = job["Executor"]["Instances"]
    assert placement["Host"] == "algo-1"
    assert placement["Cpus"] == int(contract["SM_NUM_CPUS"]) >= 1
    training = [e for e in job["SecondaryStatusTransitions"] if e["Status"] == "Training"]
    assert f"on {job_settings.executor}" in training[0]["StatusMessage"]

    with pytest.raises(ConflictError, match="already exists"):
        service.create(script_request("ok-job", "crash.py"))
    assert service.describe("ok-job")["TrainingJobStatus"] == "Completed"

    log = read_log("ok-job", job_settings)
    assert "training on 3 files" in log
    assert any(line.startswith("epoch=3 ") for line in log)
    assert "CPUUtilization" in list_metric_names("ok-job", job_settings, source="instance") or (
        job["TrainingTimeInSeconds"] < 1
    )


def test_crashing_script_fails_with_the_end_of_its_stderr(service, script_request, wait) -> None:
    service.create(script_request("crash-job", "crash.py"))
    job = wait("crash-job")
    assert job["TrainingJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("AlgorithmError: instance algo-1 exited with code 1")
    assert "ValueError: the learning rate exploded at step 17" in reason
    # Metrics printed before the crash are kept.
    assert [m["MetricName"] for m in job["FinalMetricDataList"]] == ["train:loss"]


def test_script_that_prints_no_metrics_fails_saying_so(service, script_request, wait) -> None:
    service.create(script_request("silent-job", "silent.py"))
    job = wait("silent-job")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("NoMetrics:")
    assert "train:loss" in job["FailureReason"]
    # The model it wrote is still uploaded.
    assert "ModelArtifacts" in job


def test_stop_keeps_the_last_checkpoint(
    service, script_request, wait, job_settings: Settings
) -> None:
    service.create(script_request("stop-job", "run_forever.py"))
    wait("stop-job", lambda job: len(job["FinalMetricDataList"]) > 0)
    service.stop("stop-job")
    assert service.describe("stop-job")["TrainingJobStatus"] in ("Stopping", "Stopped")
    service.stop("stop-job")  # a second stop while stopping is harmless
    job = wait("stop-job")
    assert job["TrainingJobStatus"] == "Stopped"
    assert job["SecondaryStatus"] == "Stopped"
    assert job["StopReason"] == "Stopped on request"
    assert "Stopping" in [item["Status"] for item in job["SecondaryStatusTransitions"]]
    saved = artifact_store(job_settings).read_bytes("training-jobs/stop-job/checkpoints/epoch.txt")
    assert int(saved) >= 1
    assert "saved checkpoint on SIGTERM" in read_log("stop-job", job_settings)
    with pytest.raises(ConflictError, match="Stopped"):
        service.stop("stop-job")


def test_a_stop_right_after_create_ends_stopped_not_failed(service, script_request, wait) -> None:
    # The stop lands while the supervisor is still starting, before it handles SIGTERM.
    service.create(script_request("early-stop-job", "run_forever.py"))
    service.stop("early-stop-job")
    job = wait("early-stop-job", timeout_s=60)
    assert job["TrainingJobStatus"] == "Stopped", job.get("FailureReason")
    assert job["StopReason"] == "Stopped on request"


def test_max_runtime_stops_the_job_and_kills_one_that_ignores_sigterm(
    service, script_request, wait
) -> None:
    request = script_request(
        "hang-job",
        "run_forever.py",
        hyperparameters={"ignore-sigterm": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 2},
    )
    service.create(request)
    job = wait("hang-job", timeout_s=60)
    assert job["TrainingJobStatus"] == "Stopped"
    assert job["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "MaxRuntimeInSeconds=2" in job["StopReason"]
    # Killed after the 3 s grace period, though it ignored SIGTERM.
    assert 2 <= job["TrainingTimeInSeconds"] <= 30


def test_orphaned_job_is_marked_failed(
    service, script_request, wait, job_settings: Settings
) -> None:
    service.create(script_request("orphan-job", "run_forever.py"))
    job = wait("orphan-job", lambda job: job["SecondaryStatus"] == "Training")
    from bcd.jobs._service import get_record

    pid = get_record("orphan-job", job_settings).supervisor_pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and TrainingJobService(job_settings).recover_orphans() == []:
        time.sleep(0.1)
    job = service.describe("orphan-job")
    assert job["TrainingJobStatus"] == "Failed"
    assert "ended without recording an outcome" in job["FailureReason"]


def test_start_from_another_jobs_checkpoint(
    service, script_request, wait, job_settings: Settings
) -> None:
    service.create(script_request("parent-job", "train_ok.py", hyperparameters={"epochs": 2}))
    assert wait("parent-job")["TrainingJobStatus"] == "Completed"
    request = script_request(
        "child-job",
        "train_ok.py",
        hyperparameters={"epochs": 1},
        CheckpointConfig={"SourceTrainingJobName": "parent-job"},
    )
    service.create(request)
    job = wait("child-job")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert "resuming after epoch 2" in read_log("child-job", job_settings)
    assert [p.epoch for p in get_metric_series("child-job", "train:loss", job_settings)] == [3]


def test_two_jobs_run_at_once_and_a_tuning_tag_filters_them(service, script_request, wait) -> None:
    tag = [{"Key": "bcd:tuning-job", "Value": "tune-1"}]
    service.create(script_request("par-a", "train_ok.py", Tags=tag))
    service.create(script_request("par-b", "train_ok.py"))
    assert wait("par-a")["TrainingJobStatus"] == "Completed"
    assert wait("par-b")["TrainingJobStatus"] == "Completed"
    assert [job["TrainingJobName"] for job in service.list_jobs(tuning_job_name="tune-1")] == [
        "par-a"
    ]
    assert service.describe("par-a")["TuningJobName"] == "tune-1"
    names = [
        job["TrainingJobName"] for job in service.list_jobs(sort_by="Name", sort_order="Ascending")
    ]
    assert names == ["par-a", "par-b"]


def test_two_instances_meet_at_master_addr_and_only_the_primary_model_is_kept(
    service, script_request, wait, job_settings: Settings
) -> None:
    request = script_request("dist-job", "rendezvous.py", ResourceConfig={"InstanceCount": 2})
    service.create(request)
    job = wait("dist-job")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model = json.loads(
        artifact_store(job_settings).read_bytes("training-jobs/dist-job/output/model/model.json")
    )
    assert model == {
        "peer": {"rank": 1, "host": "algo-2"},
        "hosts": ["algo-1", "algo-2"],
        "world": 2,
    }
    log = read_log("dist-job", job_settings)
    assert "[algo-2] host=algo-2 rank=1 world=2 sent" in log
    assert job["BillableTimeInSeconds"] >= 2  # two instances are billed


@pytest.mark.slow
def test_two_instances_all_reduce_over_gloo(
    service, script_request, wait, job_settings: Settings
) -> None:
    pytest.importorskip("torch")
    request = script_request("gloo-job", "dist.py", ResourceConfig={"InstanceCount": 2})
    service.create(request)
    job = wait("gloo-job", timeout_s=180)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model = json.loads(
        artifact_store(job_settings).read_bytes("training-jobs/gloo-job/output/model/model.json")
    )
    assert model == {"sum": 3.0, "hosts": ["algo-1", "algo-2"], "world": 2}


def test_a_failing_instance_stops_the_others(service, script_request, wait) -> None:
    request = script_request(
        "half-job",
        "run_forever.py",
        hyperparameters={"fail-rank": 1},
        ResourceConfig={"InstanceCount": 2},
    )
    service.create(request)
    job = wait("half-job")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("AlgorithmError: instance algo-2 exited with code 1")
    assert "rank 1 cannot reach its peers" in job["FailureReason"]


def test_an_instance_killed_from_outside_fails_the_job_naming_it(
    service, script_request, wait
) -> None:
    request = script_request("killed-job", "run_forever.py", ResourceConfig={"InstanceCount": 2})
    service.create(request)
    wait("killed-job", lambda job: len(job["FinalMetricDataList"]) > 0)
    processes = running_instances("killed-job", 2)
    processes["algo-2"].kill()
    killed = time.monotonic()
    job = wait("killed-job", timeout_s=30)
    assert time.monotonic() - killed < 15
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("AlgorithmError: instance algo-2 was killed by SIGKILL")
    assert all(gone(process) for process in processes.values())  # algo-1 was stopped


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"TrainingJobName": "bad_name"}, InvalidInputError, "invalid"),
        ({"AlgorithmSpecification": {"AlgorithmName": "xgboost"}}, InvalidInputError, "xgboost"),
        (
            {"InputDataConfig": [{"ChannelName": "train", "Uri": "/no/such/dir"}]},
            NotFoundError,
            "no folder",
        ),
        ({"ResourceConfig": {"InstanceCount": 0}}, InvalidInputError, "at least 1"),
        (
            {"StoppingCondition": {"MaxRuntimeInSeconds": "soon"}},
            InvalidInputError,
            "positive integer",
        ),
        ({"CheckpointConfig": {"SourceTrainingJobName": "nope"}}, NotFoundError, "nope"),
        ({"HyperParameters": {"sagemaker_program": "missing.py"}}, InvalidInputError, "missing.py"),
    ],
    ids=["name", "algorithm", "channel", "instances", "runtime", "parent", "entry-point"],
)
def test_bad_requests_are_refused_before_anything_runs(
    service, script_request, change, error, message, job_settings: Settings
) -> None:
    request = script_request("bad-job", "train_ok.py")
    request.update(change)
    with pytest.raises(error, match=message):
        service.create(request)
    assert service.list_jobs() == []
    assert not (job_settings.home / "jobs" / "bad-job").exists()
