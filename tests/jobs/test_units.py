"""Pieces of the engine without processes: request parsing, scraping, series, plots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.db import utcnow
from bcd.errors import InvalidInputError, NotFoundError
from bcd.jobs import (
    _store,
    get_metric_series,
    list_metric_names,
    plot_training_curves,
    unique_job_name,
)
from bcd.jobs._monitor import InstanceSampler, MetricScraper, MetricWriter
from bcd.jobs._spec import parse_request
from bcd.jobs._tables import TrainingJobRecord
from bcd.jobs.executors._usage import InstanceUsage
from bcd.names import validate_name


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """Every test of this module runs on a SQLite and on a PostgreSQL store."""
    return store_settings


def _minimal(**overrides: object) -> dict:
    request: dict = {
        "TrainingJobName": "unit-job",
        "AlgorithmSpecification": {"AlgorithmName": "cnn"},
    }
    request.update(overrides)
    return request


def test_parse_request_accepts_boto3_and_plain_uri_channels() -> None:
    spec = parse_request(
        _minimal(
            HyperParameters={"epochs": 3, "use_pretrained_model": False},
            InputDataConfig=[
                {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/t"}}},
                {"ChannelName": "validation", "Uri": "dataset://idc/validation"},
            ],
            Tags=[{"Key": "bcd:tuning-job", "Value": "tune-7"}],
        )
    )
    assert spec.hyperparameters == {"epochs": "3", "use_pretrained_model": "false"}
    assert [(c.name, c.uri) for c in spec.channels] == [
        ("train", "s3://b/t"),
        ("validation", "dataset://idc/validation"),
    ]
    assert spec.tuning_job_name == "tune-7"
    assert spec.max_runtime_s == 86_400
    assert (
        parse_request(
            _minimal(AlgorithmSpecification={"TrainingImage": "123.dkr.ecr/image-classification:1"})
        ).algorithm
        == "image-classification"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"AlgorithmSpecification": {}}, "AlgorithmName"),
        (
            {"AlgorithmSpecification": {"AlgorithmName": "cnn", "TrainingInputMode": "Stream"}},
            "TrainingInputMode",
        ),
        ({"HyperParameters": {"epochs": [1, 2]}}, "epochs"),
        ({"HyperParameters": "epochs=3"}, "must be a dict"),
        ({"InputDataConfig": [{"ChannelName": "train"}]}, "data location"),
        ({"InputDataConfig": [{"ChannelName": "tr ain", "Uri": "x"}]}, "ChannelName"),
        (
            {
                "InputDataConfig": [
                    {"ChannelName": "a", "Uri": "x"},
                    {"ChannelName": "a", "Uri": "y"},
                ]
            },
            "twice",
        ),
        ({"ResourceConfig": {"InstanceCount": 2.5}}, "positive integer"),
        ({"ResourceConfig": {"InstanceCount": 99}}, "at most 16"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 0}}, "at least 1"),
        (
            {
                "AlgorithmSpecification": {
                    "AlgorithmName": "cnn",
                    "MetricDefinitions": [{"Name": "x", "Regex": "no group"}],
                }
            },
            "capture group",
        ),
        (
            {
                "AlgorithmSpecification": {
                    "AlgorithmName": "cnn",
                    "MetricDefinitions": [{"Name": "x", "Regex": "(["}],
                }
            },
            "invalid regex",
        ),
        ({"Tags": [{"Value": "v"}]}, "Tags"),
        ({"Bogus": 1}, "unknown create_training_job argument"),
    ],
    ids=[
        "no-algorithm",
        "input-mode",
        "hp-list",
        "hp-not-dict",
        "channel-no-uri",
        "channel-name",
        "channel-twice",
        "instances-float",
        "instances-many",
        "runtime-zero",
        "regex-no-group",
        "regex-invalid",
        "tag-no-key",
        "unknown-key",
    ],
)
def test_parse_request_refuses_bad_input(change: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_request(_minimal(**change))


def test_scraper_reads_values_and_epochs() -> None:
    scraper = MetricScraper(
        [
            {"Name": "validation:bac", "Regex": r"validation:bac=([-0-9.eE]+)"},
            {"Name": "loss", "Regex": r"loss: ([0-9.]+)"},
        ]
    )
    assert scraper.scrape("#metric epoch=4 validation:bac=0.8125") == [
        ("validation:bac", 0.8125, 4)
    ]
    assert scraper.scrape("step 10 loss: 0.25") == [("loss", 0.25, None)]
    assert scraper.scrape("validation:bac=nan") == []
    assert scraper.scrape("nothing to see") == []


def _record(name: str, settings: Settings) -> None:
    _store.insert_job(
        TrainingJobRecord(
            name=name,
            algorithm="cnn",
            spec={},
            hyperparameters={},
            tags=[],
            status="InProgress",
            secondary_status="Starting",
            workdir=str(settings.home / "jobs" / name),
            host="test-host",
        ),
        settings,
    )


def test_metric_writer_continues_series_and_series_are_readable(settings: Settings) -> None:
    _record("series-job", settings)
    writer = MetricWriter("series-job", settings, flush_interval_s=0.05)
    writer.start()
    for epoch, value in enumerate((0.5, 0.4), start=1):
        writer.add("algorithm", "train:loss", value, epoch)
    writer.add("instance", "CPUUtilization", 150.0)
    writer.close()
    again = MetricWriter("series-job", settings)
    again.add("algorithm", "train:loss", 0.3, 3)
    again.close()
    series = get_metric_series("series-job", "train:loss", settings)
    assert [(p.step, p.epoch, p.value) for p in series] == [(0, 1, 0.5), (1, 2, 0.4), (2, 3, 0.3)]
    assert series[0].timestamp.tzinfo is not None
    assert list_metric_names("series-job", settings, source="instance") == ["CPUUtilization"]
    assert get_metric_series("series-job", "validation:auc", settings) == []
    with pytest.raises(NotFoundError):
        get_metric_series("other-job", "train:loss", settings)


def test_terminal_status_never_flips(settings: Settings) -> None:
    _record("flip-job", settings)
    assert _store.set_status(
        "flip-job", settings, status="Completed", secondary="Completed", message="done"
    )
    assert not _store.set_status(
        "flip-job", settings, status="Failed", secondary="Failed", message="late"
    )
    assert _store.get_job("flip-job", settings).status == "Completed"


def test_plot_draws_curves_and_refuses_an_empty_job(settings: Settings, tmp_path: Path) -> None:
    _record("plot-job", settings)
    with pytest.raises(InvalidInputError, match="no metrics"):
        plot_training_curves("plot-job", tmp_path / "none.png", settings)
    points = []
    for epoch in range(1, 4):
        for metric, value in (
            ("train:loss", 1 / epoch),
            ("validation:bac", 0.6 + epoch / 20),
            ("my:custom", epoch),
        ):
            points.append(("algorithm", metric, value, epoch - 1, epoch, utcnow()))
    _store.add_metrics("plot-job", points, settings)
    out = plot_training_curves("plot-job", tmp_path / "curves" / "c.png", settings)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_unique_job_names_are_valid_and_distinct() -> None:
    names = {unique_job_name("image-classification") for _ in range(20)}
    assert len(names) == 20
    for name in names:
        assert validate_name(name) == name
    assert validate_name(unique_job_name("x" * 80 + "_!"))


_AUTOGROUP_PROBE = """
import os, sys
os.nice(int(sys.argv[1]))
from bcd.jobs.supervisor import keep_caller_priority
given = keep_caller_priority()
print(given, open("/proc/self/autogroup").read().split()[-1])
"""


@pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling on this system"
)
@pytest.mark.parametrize("niceness", [0, 7], ids=["not-niced", "niced"])
def test_a_new_job_session_keeps_the_callers_niceness(niceness: int) -> None:
    import subprocess
    import sys

    # A new session is a new scheduling group at nice 0, as for a real supervisor.
    probe = subprocess.run(
        [sys.executable, "-c", _AUTOGROUP_PROBE, str(niceness)],
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=60,
        check=True,
    )
    # os.nice adds to the niceness this test itself runs at.
    expected = min(os.nice(0) + niceness, 19)
    given, group_nice = probe.stdout.split()
    assert int(given) == expected and int(group_nice) == expected


def test_keep_caller_priority_writes_the_niceness_only_where_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from bcd.jobs.supervisor import keep_caller_priority

    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    monkeypatch.setattr(os, "getpriority", lambda which, who: 5)
    assert keep_caller_priority(tmp_path / "absent") == 0
    assert keep_caller_priority(group) == 5 and group.read_text() == "5\n"
    monkeypatch.setattr(Path, "write_text", _refuse)
    assert keep_caller_priority(group) == 0
    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    assert keep_caller_priority(group) == 0


def _refuse(*args: object, **kwargs: object) -> int:
    raise PermissionError("refused")


def test_instance_samples_add_up_what_each_node_measured(tmp_path: Path) -> None:
    gib = 2**30
    remote = [
        InstanceUsage("node-a", cpu_percent=150.0, memory_bytes=gib, node_memory_bytes=8 * gib),
        InstanceUsage("node-a", cpu_percent=50.0, memory_bytes=gib, node_memory_bytes=8 * gib),
        InstanceUsage(
            "node-b",
            cpu_percent=100.0,
            memory_bytes=2 * gib,
            node_memory_bytes=8 * gib,
            gpu={"GPUUtilization": 80.0},
        ),
    ]
    samples: dict[str, float] = {}
    sampler = InstanceSampler(
        list,
        tmp_path,
        samples.__setitem__,
        remote=lambda: remote,  # no process of this machine
    )
    sampler.sample()
    assert samples["CPUUtilization"] == 300.0
    assert samples["MemoryUsedMegabytes"] == 4 * 1024
    assert samples["MemoryUtilization"] == 25.0  # 4 GiB of two 8 GiB nodes, each counted once
    assert samples["GPUUtilization"] == 80.0
    assert 0 <= samples["DiskUtilization"] <= 100
    assert InstanceUsage.from_dict(remote[2].to_dict()) == remote[2]
