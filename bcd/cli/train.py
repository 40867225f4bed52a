"""``bcd train``: start a training job (built-in algorithm or your own script)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bcd.errors import InvalidInputError

console = Console()
err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``bcd train`` to the root app."""
    app.command("train")(train_command)


def parse_pairs(values: list[str], what: str, separator: str = "=") -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``.

    Raises:
        InvalidInputError: An item without the separator or with an empty key.
    """
    pairs: dict[str, str] = {}
    for item in values:
        key, found, value = item.partition(separator)
        if not found or not key.strip():
            raise InvalidInputError(f"{what} {item!r} must look like KEY{separator}VALUE")
        pairs[key.strip()] = value
    return pairs


def build_request(
    *,
    algorithm: str,
    name: str,
    channels: dict[str, str],
    hyperparameters: dict[str, str],
    instance_count: int,
    instance_type: str,
    max_runtime: int,
    checkpoint_from: str | None,
    entry_point: str | None,
    source_dir: Path | None,
    metric_definitions: dict[str, str],
    tags: dict[str, str],
) -> dict[str, Any]:
    """The ``create_training_job`` request the CLI options describe."""
    hyperparameters = dict(hyperparameters)
    if algorithm == "script":
        if not entry_point:
            raise InvalidInputError(
                "--algorithm script needs --entry-point train.py (and --source-dir DIR)"
            )
        hyperparameters["sagemaker_program"] = entry_point
        if source_dir is not None:
            hyperparameters["sagemaker_submit_directory"] = str(source_dir)
    elif entry_point or source_dir:
        raise InvalidInputError("--entry-point and --source-dir go with --algorithm script only")
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "AlgorithmName": algorithm,
            "TrainingInputMode": "File",
            "MetricDefinitions": [
                {"Name": metric, "Regex": regex} for metric, regex in metric_definitions.items()
            ],
        },
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {"ChannelName": channel, "DataSource": {"S3DataSource": {"S3Uri": uri}}}
            for channel, uri in channels.items()
        ],
        "ResourceConfig": {"InstanceCount": instance_count, "InstanceType": instance_type},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
    }
    if checkpoint_from:
        request["CheckpointConfig"] = {"SourceTrainingJobName": checkpoint_from}
    return request


def train_command(
    algorithm: str = typer.Option(
        ..., "--algorithm", "-a", help="image-classification, cnn or script."
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Imported dataset: channels train/validation = dataset://NAME/train|validation.",
    ),
    train: str | None = typer.Option(None, "--train", help="URI of the train channel."),
    validation: str | None = typer.Option(
        None, "--validation", help="URI of the validation channel."
    ),
    channel: list[str] = typer.Option(
        [], "--channel", help="Another channel, NAME=URI (repeatable)."
    ),
    hp: list[str] = typer.Option([], "--hp", help="Hyperparameter KEY=VALUE (repeatable)."),
    name: str | None = typer.Option(
        None, "--name", "-n", help="Job name (default: ALGORITHM-time-id)."
    ),
    instance_count: int = typer.Option(
        1, "--instance-count", help="Processes; >1 trains data-parallel."
    ),
    instance_type: str = typer.Option(
        "local",
        "--instance-type",
        help="Recorded (local executor); CPUs/GPUs to reserve on Ray (docs/cluster.md).",
    ),
    max_runtime: int = typer.Option(
        86_400, "--max-runtime", help="Stop the job after this many seconds."
    ),
    checkpoint_from: str | None = typer.Option(
        None, "--checkpoint-from", help="Start from this job's last checkpoint."
    ),
    entry_point: str | None = typer.Option(
        None, "--entry-point", help="Script mode: the training script."
    ),
    source_dir: Path | None = typer.Option(
        None, "--source-dir", help="Script mode: folder holding the script."
    ),
    metric: list[str] = typer.Option(
        [], "--metric", help="Metric definition NAME=REGEX (repeatable; script mode)."
    ),
    tag: list[str] = typer.Option([], "--tag", help="Tag KEY=VALUE (repeatable)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job's log until it ends."),
) -> None:
    """Start a training job; returns at once unless --wait."""
    from bcd.clients import Client
    from bcd.jobs import unique_job_name

    channels: dict[str, str] = {}
    if dataset:
        channels = {"train": f"dataset://{dataset}/train"}
        channels["validation"] = f"dataset://{dataset}/validation"
    if train:
        channels["train"] = train
    if validation:
        channels["validation"] = validation
    channels.update(parse_pairs(channel, "--channel"))
    job_name = name or unique_job_name(algorithm)
    request = build_request(
        algorithm=algorithm,
        name=job_name,
        channels=channels,
        hyperparameters=parse_pairs(hp, "--hp"),
        instance_count=instance_count,
        instance_type=instance_type,
        max_runtime=max_runtime,
        checkpoint_from=checkpoint_from,
        entry_point=entry_point,
        source_dir=source_dir,
        metric_definitions=parse_pairs(metric, "--metric"),
        tags=parse_pairs(tag, "--tag"),
    )
    client = Client()
    client.create_training_job(**request)
    console.print(f"training job [bold]{job_name}[/] started ({algorithm})")
    if not wait:
        console.print(
            f"follow it with: bcd jobs logs {job_name} -f   |   bcd jobs describe {job_name}"
        )
        return
    from bcd.cli.jobs import follow_and_report

    follow_and_report(client, job_name, logs=True)
