"""``bcd jobs``: list, describe, logs, metrics, plot, stop and wait for training jobs."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from bcd.cli._output import (
    Column,
    JsonFlag,
    OutputOption,
    choose,
    local_time,
    print_document,
    print_records,
    styled_status,
)
from bcd.errors import BcdTimeoutError, JobFailedError

jobs_app = typer.Typer(
    help="Training jobs: list, describe, logs, metrics, plot, stop, wait.",
    no_args_is_help=True,
)
console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``jobs`` command group to the root app."""
    app.add_typer(jobs_app, name="jobs")


def _client() -> Any:
    from bcd.clients import Client

    return Client()


def _duration(job: dict[str, Any]) -> str:
    start = job.get("TrainingStartTime")
    if not start:
        return "-"
    end = job.get("TrainingEndTime") or dt.datetime.now(dt.UTC)
    return f"{(end - start).total_seconds():.0f} s"


def follow_and_report(client: Any, name: str, logs: bool = True) -> dict[str, Any]:
    """Print the job's log as it grows (when ``logs``), then its outcome.

    Raises:
        JobFailedError: The job ended ``Failed`` (the message is its FailureReason).
    """
    from bcd.jobs import follow_log

    if logs:
        for line in follow_log(name, client.settings):
            typer.echo(line)
    else:
        with console.status(f"waiting for {name}"):
            while client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in (
                "InProgress",
                "Stopping",
            ):
                time.sleep(1.0)
    job = client.describe_training_job(TrainingJobName=name)
    _print_outcome(job)
    if job["TrainingJobStatus"] == "Failed":
        raise JobFailedError(f"training job {name} failed: {job.get('FailureReason')}")
    return job


def _print_outcome(job: dict[str, Any]) -> None:
    console.print(
        f"{job['TrainingJobName']}: {styled_status(job['TrainingJobStatus'])} "
        f"({job['SecondaryStatus']}), training time {_duration(job)}"
    )
    if job.get("StopReason"):
        console.print(f"stop reason: {job['StopReason']}", highlight=False)
    if job.get("ModelArtifacts"):
        console.print(f"model: {job['ModelArtifacts']['S3ModelArtifacts']}", highlight=False)
    if job.get("FinalMetricDataList"):
        console.print(_final_metrics_table(job))


def _final_metrics_table(job: dict[str, Any]) -> Table:
    table = Table(title="final metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for item in job["FinalMetricDataList"]:
        table.add_row(item["MetricName"], f"{item['Value']:.4g}")
    return table


_JOB_COLUMNS = (
    Column("name", "TrainingJobName"),
    Column("algorithm", "AlgorithmName"),
    Column("status", "TrainingJobStatus", styled_status),
    Column("secondary", "SecondaryStatus"),
    Column("created", "CreationTime", local_time),
    Column("tuning job", "TuningJobName", lambda value: value or ""),
)


@jobs_app.command("list")
def list_command(
    status: str | None = typer.Option(None, "--status", help="Only jobs in this status."),
    name_contains: str | None = typer.Option(None, "--name-contains", help="Name filter."),
    tuning_job: str | None = typer.Option(None, "--tuning-job", help="Trials of a tuning job."),
    limit: int = typer.Option(50, "--limit", help="At most this many (newest first)."),
    output: OutputOption = None,
) -> None:
    """List training jobs, newest first."""
    response = _client().list_training_jobs(
        StatusEquals=status,
        NameContains=name_contains,
        TuningJobName=tuning_job,
        MaxResults=limit,
    )
    print_records(
        response["TrainingJobSummaries"], _JOB_COLUMNS, choose(output), title="training jobs"
    )


@jobs_app.command("describe")
def describe_command(
    name: str = typer.Argument(..., help="Training job name."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a job: status, transitions, hyperparameters, metrics, artifacts."""
    job = _client().describe_training_job(TrainingJobName=name)
    print_document(job, choose(output, as_json), lambda: _print_description(name, job))


def _print_description(name: str, job: dict[str, Any]) -> None:
    spec = job["AlgorithmSpecification"]
    console.print(
        f"[bold]{name}[/]  {spec['AlgorithmName']}  {styled_status(job['TrainingJobStatus'])}"
    )
    console.print(
        f"created {local_time(job['CreationTime'])}, instances "
        f"{job['ResourceConfig']['InstanceCount']}, max runtime "
        f"{job['StoppingCondition']['MaxRuntimeInSeconds']} s, billable "
        f"{job.get('BillableTimeInSeconds', '-')} s",
        highlight=False,
    )
    if job.get("FailureReason"):
        console.print(f"[red]failure reason:[/] {job['FailureReason']}", highlight=False)
    executor = job.get("Executor") or {}
    where = "; ".join(
        f"{item['Host']} on {item['Node']} ({item['Cpus']} CPU, {item['Gpus']} GPU)"
        for item in executor.get("Instances") or []
    )
    console.print(f"ran on: {executor.get('Name', 'local')} {where}".rstrip(), highlight=False)
    transitions = Table(title="status transitions")
    for column in ("status", "start", "message"):
        transitions.add_column(column)
    for item in job["SecondaryStatusTransitions"]:
        transitions.add_row(item["Status"], local_time(item["StartTime"]), item["StatusMessage"])
    console.print(transitions)
    hyperparameters = Table(title="hyperparameters")
    hyperparameters.add_column("name")
    hyperparameters.add_column("value")
    for key, value in job["HyperParameters"].items():
        hyperparameters.add_row(key, value)
    if job["HyperParameters"]:
        console.print(hyperparameters)
    channels = ", ".join(
        f"{item['ChannelName']}={item['DataSource']['S3DataSource']['S3Uri']}"
        for item in job["InputDataConfig"]
    )
    console.print(f"channels: {channels or '-'}", highlight=False)
    _print_outcome(job)
    console.print(f"log: {job['LogPath']}", highlight=False)


@jobs_app.command("logs")
def logs_command(
    name: str = typer.Argument(..., help="Training job name."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Follow until the job ends."),
    tail: int | None = typer.Option(None, "--tail", help="Only the last N lines."),
) -> None:
    """Print a job's log (stdout and stderr of its processes)."""
    from bcd.jobs import follow_log, read_log

    client = _client()
    client.describe_training_job(TrainingJobName=name)  # not found → clear error
    if follow:
        for line in follow_log(name, client.settings):
            typer.echo(line)
        return
    for line in read_log(name, client.settings, tail=tail):
        typer.echo(line)


@jobs_app.command("metrics")
def metrics_command(
    name: str = typer.Argument(..., help="Training job name."),
    instance: bool = typer.Option(
        False, "--instance", help="Instance metrics (CPU, memory, disk, GPU) instead."
    ),
    output: OutputOption = None,
) -> None:
    """Print a job's algorithm metrics per epoch (or its instance metrics)."""
    from bcd.jobs import get_metric_series, list_metric_names

    client = _client()
    client.describe_training_job(TrainingJobName=name)
    source = "instance" if instance else "algorithm"
    names = list_metric_names(name, client.settings, source=source)
    fmt = choose(output)
    if not names and fmt == "table":
        console.print(f"training job {name} has recorded no {source} metrics yet")
        return
    series = {metric: get_metric_series(name, metric, client.settings) for metric in names}
    if instance:
        print_records(
            _instance_rows(series),
            [Column("metric", "metric")]
            + [Column(key, key, lambda v: f"{v:.1f}", "right") for key in ("last", "mean", "max")]
            + [Column("samples", "samples", justify="right")],
            fmt,
            title=f"{name}: instance metrics",
        )
        return
    columns = [Column("epoch", "epoch", justify="right")] + [
        Column(metric, metric, lambda v: "" if v is None else f"{v:.4g}", "right")
        for metric in names
    ]
    print_records(_epoch_rows(series), columns, fmt, title=f"{name}: metrics per epoch")


def _instance_rows(series: dict[str, list[Any]]) -> list[dict[str, Any]]:
    rows = []
    for metric, points in series.items():
        values = [point.value for point in points]
        rows.append(
            {
                "metric": metric,
                "last": values[-1],
                "mean": statistics.fmean(values),
                "max": max(values),
                "samples": len(values),
            }
        )
    return rows


def _epoch_rows(series: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """One row per epoch (``#<step>`` for points without one), a value per metric."""
    rows: dict[Any, dict[str, Any]] = {}
    for metric, points in series.items():
        for point in points:
            key = point.epoch if point.epoch is not None else f"#{point.step}"
            rows.setdefault(key, {"epoch": key})[metric] = point.value
    return [rows[key] for key in sorted(rows, key=lambda item: (isinstance(item, str), item))]


@jobs_app.command("plot")
def plot_command(
    name: str = typer.Argument(..., help="Training job name."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
) -> None:
    """Draw a job's training/validation curves into a PNG."""
    from bcd.jobs import plot_training_curves

    client = _client()
    client.describe_training_job(TrainingJobName=name)
    path = plot_training_curves(name, out, client.settings)
    console.print(f"wrote {path}", highlight=False)


@jobs_app.command("stop")
def stop_command(name: str = typer.Argument(..., help="Training job name.")) -> None:
    """Stop a running job (SIGTERM, then SIGKILL after a grace period)."""
    _client().stop_training_job(TrainingJobName=name)
    console.print(f"stopping {name}; `bcd jobs wait {name}` waits until it has stopped")


@jobs_app.command("wait")
def wait_command(
    name: str = typer.Argument(..., help="Training job name."),
    timeout: float | None = typer.Option(None, "--timeout", help="Give up after S seconds."),
    logs: bool = typer.Option(False, "--logs", help="Print the log while waiting."),
) -> None:
    """Wait until a job has ended; exit code 6 when it failed, 7 on timeout."""
    client = _client()
    client.describe_training_job(TrainingJobName=name)
    if timeout is None:
        follow_and_report(client, name, logs=logs)
        return
    deadline = time.monotonic() + timeout
    while client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in (
        "InProgress",
        "Stopping",
    ):
        if time.monotonic() > deadline:
            raise BcdTimeoutError(f"training job {name} is still running after {timeout:g} s")
        time.sleep(0.5)
    follow_and_report(client, name, logs=False)
