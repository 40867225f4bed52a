"""``--output json|table|csv`` (and ``BCD_OUTPUT``) on every list, describe and metrics command.

One home holds a real training job with long metric names, a tuning job, a
dataset, a model deployed to an endpoint and an API key; each command runs
through Typer's CliRunner at 80 columns.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bcd import config, db, registry
from bcd.cli.main import build_app
from bcd.clients import Client
from bcd.config import Settings
from bcd.data import import_dataset
from bcd.registry.keys import create_api_key
from bcd.testing import make_synthetic_tree
from bcd.testing.models import write_tiny_model
from bcd.tuning import create_tuning_job, describe_tuning_job

SCRIPTS = Path(__file__).parent / "scripts"
TUNING_SCRIPTS = Path(__file__).resolve().parents[1] / "tuning" / "scripts"
METRICS = (
    "train:loss",
    "train:accuracy",
    "validation:loss",
    "validation:accuracy",
    "validation:balanced_accuracy",
    "validation:auc",
    "train:epoch_seconds",
)

# (command, the key every JSON record / the CSV header holds)
LISTINGS = [
    (["jobs", "list"], "TrainingJobName"),
    (["jobs", "metrics", "many"], "epoch"),
    (["jobs", "metrics", "many", "--instance"], "metric"),
    (["tuning-jobs", "list"], "HyperParameterTuningJobName"),
    (["tuning-jobs", "trials", "tune-cli"], "TrainingJobName"),
    (["data", "list"], "name"),
    (["models", "list"], "ModelName"),
    (["endpoint-configs", "list"], "EndpointConfigName"),
    (["endpoints", "list"], "EndpointName"),
    (["keys", "list"], "KeyId"),
]
DESCRIPTIONS = [
    (["jobs", "describe", "many"], "TrainingJobName"),
    (["tuning-jobs", "describe", "tune-cli"], "HyperParameterTuningJobName"),
    (["data", "show", "syn"], "fingerprint"),
    (["data", "stats", "syn"], "channel_mean"),
    (["models", "describe", "tiny"], "ModelName"),
    (["endpoint-configs", "describe", "tiny"], "EndpointConfigName"),
    (["endpoints", "describe", "tiny"], "EndpointName"),
]


def _ids(cases: list[tuple[list[str], str]]) -> list[str]:
    return ["-".join(part.lstrip("-") for part in argv) for argv, _ in cases]


def _tuning_request() -> dict:
    return {
        "HyperParameterTuningJobName": "tune-cli",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "IntegerParameterRanges": [
                    {"Name": "mini_batch_size", "MinValue": "16", "MaxValue": "64"}
                ]
            },
            "RandomSeed": 5,
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "AlgorithmName": "script",
                "MetricDefinitions": [{"Name": "score", "Regex": r"score=([0-9.eE+-]+)"}],
            },
            "StaticHyperParameters": {
                "sagemaker_program": "quick_train.py",
                "sagemaker_submit_directory": str(TUNING_SCRIPTS),
                "epochs": 1,
                "epoch_seconds": 0.01,
            },
        },
    }


@pytest.fixture(scope="module")
def filled_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("output-home")
    settings = Settings(home=home, job_sample_interval_s=0.2)
    client = Client(settings=settings)
    client.create_training_job(
        TrainingJobName="many",
        AlgorithmSpecification={
            "AlgorithmName": "script",
            "MetricDefinitions": [
                {"Name": name, "Regex": rf"{re.escape(name)}=([0-9.]+)"} for name in METRICS
            ],
        },
        HyperParameters={
            "sagemaker_program": "many_metrics.py",
            "sagemaker_submit_directory": str(SCRIPTS),
            "epochs": "3",
        },
    )
    create_tuning_job(_tuning_request(), settings)
    tree = make_synthetic_tree(tmp_path_factory.mktemp("tree") / "idc", 4, 10)
    import_dataset(tree, "syn", settings=settings, split=None)
    model = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    registry.create_model("tiny", model_data=str(model), settings=settings)
    variant = {"VariantName": "AllTraffic", "ModelName": "tiny", "InitialInstanceCount": 1}
    registry.create_endpoint_config("tiny", [variant], settings=settings)
    registry.create_endpoint("tiny", "tiny", settings=settings)
    create_api_key("pathology-app", 30, settings=settings)
    waiter = client.get_waiter("training_job_completed_or_stopped")
    assert waiter.wait(TrainingJobName="many", WaiterConfig={"Delay": 0.2})[
        "TrainingJobStatus"
    ] == ("Completed")
    tuning = client.get_waiter("hyper_parameter_tuning_job_completed_or_stopped")
    tuning.wait(HyperParameterTuningJobName="tune-cli", WaiterConfig={"Delay": 0.2})
    assert describe_tuning_job("tune-cli", settings)["HyperParameterTuningJobStatus"] == (
        "Completed"
    )
    db.dispose_engines()
    yield home
    from bcd.serving import close_local_services

    close_local_services()
    db.dispose_engines()


@pytest.fixture
def cli(filled_home: Path, bcd_home: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner on the filled home, 80 columns wide."""
    monkeypatch.setenv("BCD_HOME", str(filled_home))
    config.get_settings.cache_clear()
    return CliRunner(env={"COLUMNS": "80"})


def _invoke(cli: CliRunner, argv: list[str], **env: str) -> str:
    result = cli.invoke(build_app(), argv, env={"COLUMNS": "80", **env})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(("argv", "key"), LISTINGS, ids=_ids(LISTINGS))
def test_listings_print_json_csv_and_a_table(cli: CliRunner, argv: list[str], key: str) -> None:
    records = json.loads(_invoke(cli, [*argv, "--output", "json"]))
    assert records and all(key in record for record in records)
    rows = list(csv.DictReader(io.StringIO(_invoke(cli, [*argv, "-o", "csv"]))))
    assert len(rows) == len(records) and all(row[key] != "" for row in rows)
    assert [row[key] for row in rows] == [str(record[key]) for record in records]
    table = _invoke(cli, argv, BCD_OUTPUT="table")
    assert "…" not in table.replace("fingerprint", "").split("sha256:")[0]
    assert max(len(line) for line in table.splitlines()) <= 80


@pytest.mark.parametrize(("argv", "key"), DESCRIPTIONS, ids=_ids(DESCRIPTIONS))
def test_descriptions_print_json_csv_and_a_table(cli: CliRunner, argv: list[str], key: str) -> None:
    document = json.loads(_invoke(cli, [*argv, "-o", "json"]))
    assert key in document
    fields = dict(csv.reader(io.StringIO(_invoke(cli, [*argv, "-o", "csv"]))))
    assert fields.pop("field") == "value"
    assert any(field == key or field.startswith(f"{key}.") for field in fields)
    table = _invoke(cli, [*argv, "-o", "table"])
    assert max(len(line) for line in table.splitlines()) <= 80


def test_bcd_output_sets_the_default_and_the_flag_wins(cli: CliRunner) -> None:
    assert json.loads(_invoke(cli, ["models", "list"], BCD_OUTPUT="json"))[0]["ModelName"] == (
        "tiny"
    )
    header = _invoke(cli, ["models", "list", "-o", "csv"], BCD_OUTPUT="json").splitlines()[0]
    assert header == "ModelName,CreationTime"
    bad = cli.invoke(build_app(), ["models", "list"], env={"BCD_OUTPUT": "yaml"})
    assert bad.exit_code == 2 and "'yaml' is not one of 'table', 'json', 'csv'" in bad.output


def test_the_metrics_table_holds_every_metric_name_whole(cli: CliRunner) -> None:
    table = _invoke(cli, ["jobs", "metrics", "many"])
    for name in METRICS:
        assert name in table
    assert "…" not in table
    # Too wide for 80 columns one epoch a row: the epochs run across instead.
    assert re.search(r"epoch\s+┃\s+1\s+┃\s+2\s+┃\s+3", table)
    rows = list(csv.DictReader(io.StringIO(_invoke(cli, ["jobs", "metrics", "many", "-o", "csv"]))))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert float(rows[2]["validation:balanced_accuracy"]) == pytest.approx(0.65)


def test_wide_tables_fit_at_a_hundred_and_twenty_columns(cli: CliRunner) -> None:
    wide = cli.invoke(build_app(), ["jobs", "list"], env={"COLUMNS": "120"}).stdout
    assert re.search(r"name\s+┃\s+algorithm\s+┃\s+status", wide)
    assert "many" in wide


def test_help_shows_no_value_token_beside_flags(cli: CliRunner) -> None:
    for argv in (["jobs", "metrics"], ["keys", "list"], ["data", "show"], ["train"], []):
        result = cli.invoke(build_app(), [*argv, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0
        assert "<bool>" not in result.stdout
    metrics_help = cli.invoke(build_app(), ["jobs", "metrics", "--help"]).stdout
    assert "--instance" in metrics_help and "<table|json|csv>" in metrics_help
