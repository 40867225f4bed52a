"""CLI commands: ``bcd tune CONFIG.yaml`` and ``bcd tuning-jobs …`` (list, describe, stop, …)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from bcd.errors import JobFailedError

console = Console()

tuning_app = typer.Typer(
    help="Hyperparameter tuning jobs: list, describe, trials, stop, resume, plot."
)

_DONE = ("Completed", "Failed", "Stopped")


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


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


def _trial_table(name: str) -> None:
    from bcd import tuning

    trials = tuning.list_trials(name)
    if not trials:
        console.print("no trials yet")
        return
    tuned = sorted({key for trial in trials for key in trial["TunedHyperParameters"]})
    table = Table("#", "training job", "status", *tuned, "objective", "ended")
    for trial in trials:
        objective = trial.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
        status = "Pruned" if trial["Pruned"] else trial["TrainingJobStatus"]
        table.add_row(
            str(trial["TrialNumber"]),
            trial["TrainingJobName"],
            status,
            *[_short(trial["TunedHyperParameters"].get(key, "")) for key in tuned],
            "" if objective is None else f"{objective:.6g}",
            _when(trial.get("TrainingEndTime")),
        )
    console.print(table)


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


@tuning_app.command("list")
def list_command(
    name_contains: str | None = typer.Option(None, "--name-contains"),
    status: str | None = typer.Option(None, "--status"),
) -> None:
    """List tuning jobs, newest first."""
    from bcd import tuning

    summaries = tuning.list_tuning_jobs(name_contains=name_contains, status=status)
    if not summaries:
        console.print("no tuning jobs")
        return
    table = Table("name", "status", "strategy", "trials", "created", "ended")
    for summary in summaries:
        counters = summary["TrainingJobStatusCounters"]
        ended = sum(counters[key] for key in ("Completed", "Failed", "Stopped", "Pruned"))
        limit = summary["ResourceLimits"]["MaxNumberOfTrainingJobs"]
        table.add_row(
            summary["HyperParameterTuningJobName"],
            summary["HyperParameterTuningJobStatus"],
            summary["Strategy"],
            f"{ended}/{limit}",
            _when(summary["CreationTime"]),
            _when(summary.get("HyperParameterTuningEndTime")),
        )
    console.print(table)


@tuning_app.command("describe")
def describe_command(
    name: str = typer.Argument(..., help="Tuning job name."),
    as_json: bool = typer.Option(False, "--json", help="Print the full description as JSON."),
) -> None:
    """Status, counts, best training job and the trials of a tuning job."""
    from bcd import tuning

    description = tuning.describe_tuning_job(name)
    if as_json:
        console.print_json(json.dumps(description, default=_json_default))
        return
    _report(description)
    driver = description["Driver"]
    if description["HyperParameterTuningJobStatus"] not in _DONE and not driver["Alive"]:
        console.print(
            f"[yellow]no driver is running this job;[/] continue it with "
            f"`bcd tuning-jobs resume {name}`"
        )
    _trial_table(name)


@tuning_app.command("trials")
def trials_command(name: str = typer.Argument(..., help="Tuning job name.")) -> None:
    """The training jobs of a tuning job, with tuned values and objectives."""
    _trial_table(name)


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
