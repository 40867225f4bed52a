"""CLI command: ``bcd evaluate`` — patient-level metrics with bootstrap intervals and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

_HELP = """Evaluate a model on patients it has never seen.

MODEL_OR_ENDPOINT is a model folder (model.json + model.onnx), a registered
model name, or an endpoint name. Metrics (balanced accuracy, F1, sensitivity,
specificity, precision, ROC AUC, PR AUC, log loss, Brier score, ECE) come with
95% intervals from bootstrapping over patients. The report folder gets
report.md, report.json, predictions.csv and PNG plots.

Examples:

  bcd evaluate my-model --dataset idc --split test --out reports/my-model

  bcd evaluate ./model --data ./hospital-holdout --dataset idc --out reports/holdout

  bcd evaluate ./model --dataset idc --calibrate --out reports/calibrated

  bcd evaluate ./model --dataset idc --calibrate --context-radius 3 --out reports/slides

With --context-radius R each patch is scored together with its patient's
neighbouring patches (windows up to (2R+1) x (2R+1)), as whole-slide analysis
scores tiles; without it every patch is scored alone, as the single-patch API
does.
"""


def _auto_validation(dataset: str | None, split: str, data: Path | None) -> str | None:
    """The dataset's ``validation`` split when it has one (and it is not the evaluated split)."""
    if dataset is None:
        return None
    from bcd.data import describe_dataset

    splits = describe_dataset(dataset).get("splits") or {}
    if "validation" in splits and (data is not None or split != "validation"):
        return "validation"
    return None


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_summary(console: Console, summary: dict[str, Any], report: Path) -> None:
    data = summary["data"]
    console.print(
        f"[bold]{data['description']}[/]: {data['patients']} patients, {data['patches']} patches, "
        f"IDC fraction {_format(data['idc_fraction'])}"
    )
    if data.get("rejected_files"):
        console.print(
            f"[yellow]{data['rejected_files']} files were left out[/] (listed in report.json)"
        )
    threshold = summary["threshold"]
    console.print(
        f"threshold {threshold['value']:.4f} ({threshold['source']}), "
        f"temperature {summary['temperature']:g}, logit bias "
        f"{summary.get('logit_bias', 0.0):g}, TTA {'on' if summary['tta'] else 'off'}"
    )
    context = summary.get("slide_context")
    if context:
        console.print(
            f"slide context: radius {context['radius']} ({context['source']}); the numbers "
            "describe whole-slide analysis, not the single-patch API"
        )
    validation = summary.get("validation")
    if validation:
        console.print(
            f"validation: BAC-optimal threshold {validation['bac_optimal_threshold']:.4f} "
            f"(BAC {validation['bac_at_optimum']:.3f})"
        )
        if validation.get("fitted_temperature") is not None:
            console.print(
                f"calibrated: temperature {validation['previous_temperature']:g} → "
                f"{validation['fitted_temperature']:.4f}, logit bias "
                f"{validation['previous_logit_bias']:g} → {validation['fitted_logit_bias']:.4f}, "
                "decision threshold → the BAC-optimal one; written into model.json"
                + (" with the slide context" if context else "")
            )
        if validation.get("shared_patients"):
            console.print(
                f"[yellow]warning:[/] {validation['shared_patients']} patients are in both the "
                "validation and the evaluated data"
            )
    boot = summary["bootstrap"]
    table = Table(title=f"95% CI: bootstrap over patients, {boot['replicates']} replicates")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, interval in summary["metrics"].items():
        ci = (
            "n/a"
            if interval["ci_low"] is None
            else f"{interval['ci_low']:.3f} – {interval['ci_high']:.3f}"
        )
        table.add_row(name, _format(interval["value"]), ci)
    console.print(table)
    console.print(f"report: {report}")


def evaluate_command(
    model: str = typer.Argument(
        ..., metavar="MODEL_OR_ENDPOINT", help="Model folder, registered model or endpoint."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Imported dataset to evaluate on (and take validation from)."
    ),
    split: str = typer.Option("test", "--split", help="Split of --dataset to evaluate."),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Evaluate a folder in the dataset layout (<patient>/<0|1>/<patch>.png) "
        "without importing it.",
    ),
    out: Path = typer.Option(..., "--out", help="Report folder (created when missing)."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        min=0.0,
        max=1.0,
        help="Call IDC when P(IDC) >= this; default the BAC-optimal validation threshold, "
        "else the model's decision_threshold (0.5 unless calibrated).",
    ),
    validation_split: str | None = typer.Option(
        None,
        "--validation-split",
        help="Split of --dataset to fit the threshold on (default: 'validation' when present).",
    ),
    validation_data: Path | None = typer.Option(
        None, "--validation-data", help="A dataset-layout folder to fit the threshold on."
    ),
    no_validation: bool = typer.Option(
        False,
        "--no-validation",
        help="Use no validation data (the model's decision_threshold unless given).",
    ),
    calibrate: bool = typer.Option(
        False,
        "--calibrate",
        help="Fit temperature and logit bias (Platt scaling) on the validation margins and "
        "write them, with the BAC-optimal decision threshold, into model.json "
        "(model folders only). With --context-radius the fitted slide context is written "
        "too; without it an old slide context is removed.",
    ),
    context_radius: int = typer.Option(
        0,
        "--context-radius",
        min=0,
        max=5,
        help="Score each patch with its neighbours within R patches on its patient's grid, "
        "as whole-slide analysis does (fitted on the validation data, else model.json's "
        "slide_context). 0: every patch alone, as the single-patch API.",
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Patient-bootstrap replicates (0: no intervals)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Average the 8 dihedral views (default: as model.json says).",
    ),
    variant: str | None = typer.Option(
        None, "--variant", help="Endpoint variant to evaluate (default the heaviest)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="ONNX Runtime threads (default all cores)."
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the PNG plots."),
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bcd.config import get_settings
    from bcd.errors import InvalidInputError
    from bcd.evaluation import evaluate, write_report

    if no_validation and (validation_split or validation_data):
        raise InvalidInputError("--no-validation contradicts --validation-split/--validation-data")
    if not no_validation and validation_split is None and validation_data is None:
        validation_split = _auto_validation(dataset, split, data)
    console = Console()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}
        labels = {
            "read": "reading patches",
            "validation": "scoring validation",
            "evaluate": "scoring patches",
        }

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = evaluate(
            model,
            dataset=dataset,
            split=split,
            data_folder=data,
            validation_split=validation_split,
            validation_folder=validation_data,
            threshold=threshold,
            calibrate=calibrate,
            bootstrap=bootstrap,
            seed=seed,
            tta=tta,
            context_radius=context_radius,
            variant=variant,
            threads=threads,
            settings=get_settings(),
            progress=progress,
        )
        report = write_report(result, out, plots=plots)
    _print_summary(console, result.summary(), report)


def register(app: typer.Typer) -> None:
    """Add ``bcd evaluate`` to the root app."""
    app.command("evaluate", help=_HELP)(evaluate_command)
