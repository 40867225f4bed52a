"""``bcd transform``: batch transform jobs (create, resume, describe, list, stop)."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bcd.cli._output import (
    Column,
    OutputOption,
    choose,
    local_time,
    print_document,
    print_records,
    styled_status,
)
from bcd.errors import JobFailedError

transform_app = typer.Typer(
    help="Batch transform: score a folder of patches, a dataset split or many slides offline.",
    no_args_is_help=True,
)
console = Console()

_ACCEPT = {"csv": "text/csv", "json": "application/json"}


def register(app: typer.Typer) -> None:
    """Add the ``transform`` command group to the root app."""
    transform_app.command("create")(create)
    transform_app.command("resume")(resume)
    transform_app.command("describe")(describe)
    transform_app.command("list")(list_jobs)
    transform_app.command("stop")(stop)
    app.add_typer(transform_app, name="transform")


def _client() -> Any:
    from bcd.clients import Client

    return Client()


def _follow(client: Any, name: str) -> dict[str, Any]:
    """Show a progress bar until the job ends; returns its description.

    Raises:
        JobFailedError: The job ended ``Failed``.
    """
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(name, total=None)
        while True:
            job = client.describe_transform_job(TransformJobName=name)
            counts = job["Progress"]
            progress.update(
                task,
                completed=counts["RecordsCompleted"],
                total=counts["RecordsTotal"] or None,
            )
            if job["TransformJobStatus"] not in ("InProgress", "Stopping"):
                break
            time.sleep(0.5)
    _print_outcome(job)
    if job["TransformJobStatus"] == "Failed":
        raise JobFailedError(f"transform job {name} failed: {job.get('FailureReason')}")
    return job


def _print_outcome(job: dict[str, Any]) -> None:
    status = job["TransformJobStatus"]
    counts = job["Progress"]
    console.print(
        f"{job['TransformJobName']}: {styled_status(status)} — "
        f"{counts['RecordsCompleted']} of {counts['RecordsTotal']} records, "
        f"{counts['RecordsFailed']} failed (reasons in the results)"
    )
    if job.get("Results"):
        typer.echo(f"results: {job['Results']}")
    if status == "Stopped":
        typer.echo(f"resume with: bcd transform resume {job['TransformJobName']}")


def _wait(client: Any, name: str, wait: bool) -> None:
    if not wait:
        console.print(f"started {name}; follow it with `bcd transform describe {name}`")
        return
    try:
        _follow(client, name)
    except KeyboardInterrupt:
        console.print(
            f"{name} goes on in the background; `bcd transform stop {name}` stops it, "
            f"`bcd transform resume {name}` continues a stopped job"
        )


def create(
    name: str = typer.Argument(..., help="The transform job's name (unique)."),
    model: str = typer.Option(
        ..., "--model", "-m", help="Registered model, model folder, or endpoint name."
    ),
    input_uri: str = typer.Option(
        ...,
        "--input",
        "-i",
        help="A folder of patches or of slides, or dataset://NAME/SPLIT.",
    ),
    output: str = typer.Option(..., "--output", "-o", help="Folder (or fsspec URL) for results."),
    slides: bool = typer.Option(
        False, "--slides", help="Read the folder as slides (default: by file type)."
    ),
    accept: str = typer.Option("csv", help="Results file: csv or json."),
    instance_count: int = typer.Option(1, min=1, max=64, help="Parallel workers (Ray tasks)."),
    executor: str | None = typer.Option(
        None, help="local or ray (default: BCD_EXECUTOR, else local)."
    ),
    max_payload_mb: int = typer.Option(
        6, min=1, max=100, help="MB of pixels per chunk (the unit of progress and resume)."
    ),
    single_record: bool = typer.Option(
        False, "--single-record", help="BatchStrategy SingleRecord: one patch per call."
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Show progress until it ends."),
) -> None:
    """Score every patch or slide of the input; write results.csv (or .json) to --output."""
    from bcd.errors import InvalidInputError

    if accept not in _ACCEPT:
        raise InvalidInputError(f"--accept must be csv or json, not {accept!r}")
    request: dict[str, Any] = {
        "TransformJobName": name,
        "ModelName": model,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": input_uri}}},
        "TransformOutput": {"S3OutputPath": output, "Accept": _ACCEPT[accept]},
        "TransformResources": {"InstanceType": "local", "InstanceCount": instance_count},
        "BatchStrategy": "SingleRecord" if single_record else "MultiRecord",
        "MaxPayloadInMB": max_payload_mb,
    }
    if slides:
        request["TransformInput"]["ContentType"] = "application/x-slide"
    if executor:
        request["Environment"] = {"BCD_EXECUTOR": executor}
    client = _client()
    client.create_transform_job(**request)
    _wait(client, name, wait)


def resume(
    name: str = typer.Argument(..., help="A stopped or failed transform job."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Show progress until it ends."),
) -> None:
    """Continue a stopped or failed job; chunks already finished are skipped."""
    client = _client()
    client.resume_transform_job(TransformJobName=name)
    _wait(client, name, wait)


def describe(
    name: str = typer.Argument(..., help="The transform job."),
    output: OutputOption = None,
) -> None:
    """Show a job: status, progress, input, output and resources."""
    job = _client().describe_transform_job(TransformJobName=name)
    print_document(job, choose(output))


_COLUMNS = (
    Column("name", "TransformJobName"),
    Column("status", "TransformJobStatus", styled_status),
    Column("created", "CreationTime", local_time),
    Column("ended", "TransformEndTime", local_time),
    Column("reason", "FailureReason", lambda value: (value or "")[:80]),
)


def list_jobs(
    name_contains: str | None = typer.Option(None, help="Only names containing this."),
    status: str | None = typer.Option(None, help="Only jobs with this status."),
    max_results: int = typer.Option(50, min=1, help="Most jobs to show."),
    output: OutputOption = None,
) -> None:
    """List transform jobs, newest first."""
    summaries = _client().list_transform_jobs(
        NameContains=name_contains, StatusEquals=status, MaxResults=max_results
    )["TransformJobSummaries"]
    print_records(
        summaries, _COLUMNS, choose(output), title="transform jobs", empty="no transform jobs"
    )


def stop(name: str = typer.Argument(..., help="A running transform job.")) -> None:
    """Stop a job after the chunk it is scoring; `bcd transform resume` continues it."""
    _client().stop_transform_job(TransformJobName=name)
    console.print(f"stopping {name}")
