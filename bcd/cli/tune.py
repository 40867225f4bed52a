"""CLI commands: ``bcd tune CONFIG.yaml`` and ``bcd tuning-jobs …`` (list, describe, stop, …)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bcd.cli._output import Column, JsonFlag, OutputOption, choose, print_document, print_records
from bcd.errors import JobFailedError

console = Console()

tuning_app = typer.Typer(
    help="Hyperparameter tuning jobs: list, describe, trials, stop, resume, plot."
)

_DONE = ("Completed", "Failed", "Stopped")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else ""


def _counters(description: dict[str, Any]) -> str:
    counters = description["TrainingJobStatusCounters"]
    return (
        ", ".join(
            f"{counters[key]} {key.lower()}"
            for key in ("Completed", "InProgress", "Failed", "Stopped", "Pruned")
            if counters[key]
        )
        or "no trials yet"
    )


def _wait(name: str, poll_s: float = 1.0) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bcd import tuning

    description = tuning.describe_tuning_job(name)
    total = description["HyperParameterTuningJobConfig"]["ResourceLimits"][
        "MaxNumberOfTrainingJobs"
    ]
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(name, total=total, counts="")
        while True:
            description = tuning.describe_tuning_job(name)
            counters = description["TrainingJobStatusCounters"]
            ended = sum(counters[key] for key in ("Completed", "Failed", "Stopped", "Pruned"))
            progress.update(task, completed=ended, counts=_counters(description))
            if description["HyperParameterTuningJobStatus"] in _DONE:
                return description
            time.sleep(poll_s)


def _report(description: dict[str, Any]) -> None:
    status = description["HyperParameterTuningJobStatus"]
    name = description["HyperParameterTuningJobName"]
    console.print(f"tuning job [bold]{name}[/]: {status} ({_counters(description)})")
    best = description.get("BestTrainingJob")
    if best:
        objective = best["FinalHyperParameterTuningJobObjectiveMetric"]
        console.print(
            f"best training job [bold]{best['TrainingJobName']}[/]: "
            f"{objective['MetricName']} = {objective['Value']:.6g}"
        )
        for key, value in best["TunedHyperParameters"].items():
            console.print(f"  {key} = {value}")
    if description.get("FailureReason"):
        console.print(f"[red]reason:[/] {description['FailureReason']}", highlight=False)


def _trial_records(name: str) -> tuple[list[dict[str, Any]], list[Column]]:
    """One flat record per trial (tuned values as columns) and the columns to show."""
    from bcd import tuning

    trials = tuning.list_trials(name)
    tuned = sorted({key for trial in trials for key in trial["TunedHyperParameters"]})
    records = []
    for trial in trials:
        objective = trial.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
        records.append(
            {
                "TrialNumber": trial["TrialNumber"],
                "TrainingJobName": trial["TrainingJobName"],
                "TrainingJobStatus": "Pruned" if trial["Pruned"] else trial["TrainingJobStatus"],
                **{key: trial["TunedHyperParameters"].get(key, "") for key in tuned},
                "FinalObjectiveValue": objective,
                "TrainingEndTime": trial.get("TrainingEndTime"),
            }
        )
    columns = [
        Column("#", "TrialNumber", justify="right"),
        Column("training job", "TrainingJobName"),
        Column("status", "TrainingJobStatus"),
        *[Column(key, key, _short) for key in tuned],
        Column("objective", "FinalObjectiveValue", lambda v: "" if v is None else f"{v:.6g}"),
        Column("ended", "TrainingEndTime", _when),
    ]
    return records, columns


def _trial_table(name: str, output: str = "table") -> None:
    records, columns = _trial_records(name)
    print_records(records, columns, output, empty="no trials yet")


def _short(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() else f"{number:.4g}"


def tune(
    config: Path = typer.Argument(
        ..., help="Tuning job config (YAML or JSON); see docs/tuning.md."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Tuning job name (overrides HyperParameterTuningJobName)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the tuning job until it ends."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config and exit."),
) -> None:
    """Start a hyperparameter tuning job from CONFIG (validated before anything runs)."""
    from bcd import tuning

    request = tuning.load_request_file(config)
    if name:
        request["HyperParameterTuningJobName"] = name
    if dry_run:
        checked = tuning.validate_request(request)
        console.print(
            f"config OK: {checked.strategy} over {len(checked.ranges)} hyperparameters, "
            f"{checked.max_jobs} trials, {checked.max_parallel} at a time"
        )
        return
    tuning.create_tuning_job(request)
    job = request["HyperParameterTuningJobName"]
    console.print(
        f"tuning job [bold]{job}[/] started; follow it with `bcd tuning-jobs describe {job}`"
    )
    if wait:
        description = _wait(job)
        _report(description)
        if description["HyperParameterTuningJobStatus"] == "Failed":
            raise JobFailedError(f"tuning job {job!r} failed: {description.get('FailureReason')}")


_TUNING_COLUMNS = (
    Column("name", "HyperParameterTuningJobName"),
    Column("status", "HyperParameterTuningJobStatus"),
    Column("strategy", "Strategy"),
    Column("trials", "Trials"),
    Column("created", "CreationTime", _when),
    Column("ended", "HyperParameterTuningEndTime", _when),
)


@tuning_app.command("list")
def list_command(
    name_contains: str | None = typer.Option(None, "--name-contains", help="Name filter."),
    status: str | None = typer.Option(None, "--status", help="Only jobs in this status."),
    output: OutputOption = None,
) -> None:
    """List tuning jobs, newest first."""
    from bcd import tuning

    summaries = tuning.list_tuning_jobs(name_contains=name_contains, status=status)
    for summary in summaries:
        counters = summary["TrainingJobStatusCounters"]
        ended = sum(counters[key] for key in ("Completed", "Failed", "Stopped", "Pruned"))
        limit = summary["ResourceLimits"]["MaxNumberOfTrainingJobs"]
        summary["Trials"] = f"{ended}/{limit}"
    print_records(summaries, _TUNING_COLUMNS, choose(output), empty="no tuning jobs")


@tuning_app.command("describe")
def describe_command(
    name: str = typer.Argument(..., help="Tuning job name."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Status, counts, best training job and the trials of a tuning job."""
    from bcd import tuning

    description = tuning.describe_tuning_job(name)

    def table() -> None:
        _report(description)
        driver = description["Driver"]
        if description["HyperParameterTuningJobStatus"] not in _DONE and not driver["Alive"]:
            console.print(
                f"[yellow]no driver is running this job;[/] continue it with "
                f"`bcd tuning-jobs resume {name}`"
            )
        _trial_table(name)

    print_document(description, choose(output, as_json), table)


@tuning_app.command("trials")
def trials_command(
    name: str = typer.Argument(..., help="Tuning job name."), output: OutputOption = None
) -> None:
    """The training jobs of a tuning job, with tuned values and objectives."""
    _trial_table(name, choose(output))


@tuning_app.command("stop")
def stop_command(name: str = typer.Argument(..., help="Tuning job name.")) -> None:
    """Stop a tuning job and its running training jobs."""
    from bcd import tuning

    tuning.stop_tuning_job(name)
    console.print(f"tuning job [bold]{name}[/] is stopping")


@tuning_app.command("resume")
def resume_command(
    name: str = typer.Argument(..., help="Tuning job name."),
    worker: bool = typer.Option(
        False, "--worker", help="Join as an extra worker beside a live driver (same database)."
    ),
    foreground: bool = typer.Option(
        False, "--foreground", help="Run the driver in this process instead of detached."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the tuning job until it ends."),
) -> None:
    """Continue a tuning job whose driver died, without repeating finished trials."""
    from bcd import tuning

    result = tuning.resume_tuning_job(name, worker=worker, detach=not foreground)
    if foreground:
        _report(tuning.describe_tuning_job(name))
        return
    console.print(f"tuning job [bold]{name}[/]: {'worker' if worker else 'driver'} {result}")
    if wait:
        _report(_wait(name))


@tuning_app.command("plot")
def plot_command(
    name: str = typer.Argument(..., help="Tuning job name."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
) -> None:
    """Plot the objective of each trial and the best so far into a PNG."""
    from bcd import tuning

    path = tuning.plot_tuning_job(name, out)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``tune`` and ``tuning-jobs`` to the root app."""
    app.command("tune")(tune)
    app.add_typer(tuning_app, name="tuning-jobs")
