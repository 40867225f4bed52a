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
from bcd.jobs import TrainingJobService, get_metric_series
from bcd.jobs._service import get_record
from bcd.jobs.executors._ray import bundle_for, local_head_address, resolve_address
from bcd.storage import artifact_store

from .conftest import gone, running_instances


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


def _leftovers(job_name: str, supervisor_pid: int) -> list[str]:
    """The job's Ray actors and placement groups still alive."""
    import ray

    prefix = f"bcd-job:{job_name}:{supervisor_pid}"
    left = []
    for host in ("algo-1", "algo-2"):
        try:
            ray.get_actor(f"{prefix}:{host}", namespace="bcd")
            left.append(f"actor {host}")
        except ValueError:  # no live actor of that name
            pass
    for group in ray.util.placement_group_table().values():
        if group["name"] == prefix and group["state"] != "REMOVED":
            left.append(f"placement group ({group['state']})")
    return left


def test_a_lost_instance_actor_fails_the_job_and_leaves_nothing_behind(
    service, script_request, wait, job_settings: Settings
) -> None:
    request = script_request("lost-actor", "run_forever.py", ResourceConfig={"InstanceCount": 2})
    service.create(request)
    wait("lost-actor", lambda job: len(job["FinalMetricDataList"]) > 0)
    supervisor_pid = get_record("lost-actor", job_settings).supervisor_pid
    processes = running_instances("lost-actor", 2)
    processes["algo-2"].parent().kill()  # the Ray worker process of algo-2's actor
    killed = time.monotonic()
    job = wait("lost-actor", timeout_s=30)
    assert time.monotonic() - killed < 15
    assert job["TrainingJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("AlgorithmError: instance algo-2 was lost: its Ray actor on node ")
    assert "died" in reason
    # The lost actor's instance died with it; the other one was stopped; Ray holds nothing.
    assert all(gone(process) for process in processes.values())
    assert _leftovers("lost-actor", supervisor_pid) == []


def test_instance_metrics_are_sampled_by_each_instance_actor_on_its_node(
    service, script_request, wait, job_settings: Settings
) -> None:
    request = script_request("sampled-job", "run_forever.py", ResourceConfig={"InstanceCount": 2})
    service.create(request)
    wait("sampled-job", lambda job: len(job["FinalMetricDataList"]) > 0)
    processes = running_instances("sampled-job", 2)
    both_mb = sum(process.memory_info().rss for process in processes.values()) / 2**20
    deadline = time.monotonic() + 20
    # The supervisor samples no process itself on Ray: memory arrives from the actors only.
    while True:
        points = get_metric_series("sampled-job", "MemoryUsedMegabytes", job_settings)
        if points and points[-1].value >= 0.7 * both_mb:
            break
        assert time.monotonic() < deadline, f"no sample of both instances: {points}"
        time.sleep(0.3)
    cpu = get_metric_series("sampled-job", "CPUUtilization", job_settings)
    assert cpu and all(point.value >= 0 for point in cpu)
    service.stop("sampled-job")
    assert wait("sampled-job")["TrainingJobStatus"] == "Stopped"


def test_a_ray_instance_reports_its_usage_measured_by_its_actor(
    job_settings: Settings, tmp_path: Path
) -> None:
    import socket
    import sys

    from bcd.jobs._spec import JobSpec
    from bcd.jobs.executors import get_executor

    executor = get_executor("ray", job_settings)
    spec = JobSpec(
        name="usage-test",
        algorithm="script",
        hyperparameters={},
        metric_definitions=[],
        channels=[],
    )
    try:
        [placement] = executor.reserve(spec, cancelled=lambda: False) or []
        command = [sys.executable, "-c", "import time\nwhile True: sum(range(10**6))"]
        instance = executor.start(placement, command, tmp_path, dict(os.environ), lambda *_: None)
        deadline = time.monotonic() + 20
        while instance.usage is None or instance.usage.cpu_percent == 0:
            assert time.monotonic() < deadline, "the actor sent no sample"
            time.sleep(0.1)
        usage = instance.usage
        assert instance.local_pid is None  # not sampled by the supervisor's machine
        assert usage.node == socket.gethostname() and usage.memory_bytes > 0
        assert usage.node_memory_bytes > usage.memory_bytes
        instance.signal(signal.SIGKILL)
        while instance.returncode is None:
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
        assert instance.usage is None  # an ended instance uses nothing
    finally:
        executor.close()
