"""What only the ray executor does: instance types as Ray resources, waiting for them,
and freeing them when a supervisor dies (on the session's local 2-CPU Ray cluster)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.errors import InvalidInputError
from bcd.jobs import TrainingJobService
from bcd.jobs._service import get_record
from bcd.jobs.executors._ray import bundle_for, local_head_address, resolve_address
from bcd.storage import artifact_store


@pytest.fixture
def executor_name() -> str:
    """Every job of this module runs on Ray."""
    return "ray"


def test_instance_types_map_to_ray_resources() -> None:
    assert bundle_for("local", cluster_gpus=0) == {"CPU": 1.0}
    assert bundle_for("local", cluster_gpus=2) == {"CPU": 1.0, "GPU": 1.0}
    assert bundle_for("ml.m5.large", cluster_gpus=0) == {"CPU": 2.0}
    assert bundle_for("ml.p3.8xlarge", cluster_gpus=0) == {"CPU": 32.0, "GPU": 4.0}
    with pytest.raises(InvalidInputError, match=r"valid: local, ml\.c5"):
        bundle_for("ml.m5.huge", cluster_gpus=0)


def test_an_unknown_instance_type_is_refused_when_the_job_is_created(
    service, script_request
) -> None:
    request = script_request(
        "typo-job", "train_ok.py", ResourceConfig={"InstanceType": "ml.m5.huge"}
    )
    with pytest.raises(InvalidInputError, match=r"unknown ResourceConfig\.InstanceType"):
        service.create(request)
    assert service.list_jobs() == []


def test_an_instance_type_gets_its_cpus(
    service, script_request, wait, job_settings: Settings
) -> None:
    request = script_request(
        "typed-job", "train_ok.py", ResourceConfig={"InstanceType": "ml.m5.large"}
    )
    service.create(request)
    job = wait("typed-job")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    [placement] = job["Executor"]["Instances"]
    assert placement["Cpus"] == 2 and placement["Executor"] == "ray"
    store = artifact_store(job_settings)
    contract = json.loads(store.read_bytes("training-jobs/typed-job/output/data/env.json"))
    assert contract["SM_NUM_CPUS"] == "2"


def test_a_job_no_node_can_hold_fails_saying_why(service, script_request, wait) -> None:
    request = script_request(
        "big-job", "train_ok.py", ResourceConfig={"InstanceType": "ml.p3.8xlarge"}
    )
    service.create(request)
    job = wait("big-job")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("ClientError: the ray executor cannot run it")
    assert "32 CPU + 4 GPU" in job["FailureReason"]


def test_a_job_waits_for_resources_and_can_be_stopped_while_waiting(
    service, script_request, wait
) -> None:
    whole_cluster = {"InstanceType": "ml.m5.large"}  # 2 CPUs: all the test cluster has
    service.create(script_request("holder-job", "run_forever.py", ResourceConfig=whole_cluster))
    wait("holder-job", lambda job: len(job["FinalMetricDataList"]) > 0)
    service.create(script_request("waiter-job", "train_ok.py", ResourceConfig=whole_cluster))
    time.sleep(3)
    waiting = service.describe("waiter-job")
    assert waiting["TrainingJobStatus"] == "InProgress"
    assert waiting["SecondaryStatus"] == "Downloading"  # not training: no CPUs free
    service.stop("waiter-job")
    job = wait("waiter-job", timeout_s=30)
    assert job["TrainingJobStatus"] == "Stopped"
    assert "TrainingStartTime" not in job or job["TrainingStartTime"] is None
    service.stop("holder-job")
    assert wait("holder-job")["TrainingJobStatus"] == "Stopped"


def test_a_dead_supervisor_is_recovered_and_its_ray_resources_freed(
    service, script_request, wait, job_settings: Settings
) -> None:
    whole_cluster = {"InstanceType": "ml.m5.large"}
    service.create(script_request("lost-job", "run_forever.py", ResourceConfig=whole_cluster))
    wait("lost-job", lambda job: len(job["FinalMetricDataList"]) > 0)
    os.kill(get_record("lost-job", job_settings).supervisor_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while TrainingJobService(job_settings, recover_orphans=False).recover_orphans() == []:
        assert time.monotonic() < deadline, "the dead supervisor was not noticed"
        time.sleep(0.1)
    job = service.describe("lost-job")
    assert job["TrainingJobStatus"] == "Failed"
    assert "ended without recording an outcome" in job["FailureReason"]
    # Ray ends the actors of a dead supervisor: the next job gets the whole cluster.
    service.create(script_request("next-job", "train_ok.py", ResourceConfig=whole_cluster))
    assert wait("next-job", timeout_s=60)["TrainingJobStatus"] == "Completed"


def test_the_head_recorded_for_a_bcd_home_is_reused(ray_address: str, bcd_home: Path) -> None:
    settings = Settings(home=bcd_home, executor="ray")
    (settings.home / "ray").mkdir(parents=True)
    (settings.home / "ray" / "address").write_text(ray_address)
    assert local_head_address(settings) == ray_address
    assert resolve_address(Settings(home=bcd_home, ray_address="ray://head:10001")) == (
        "ray://head:10001"
    )
