"""``bcd data``: import, split, list, show, stats, grid, mosaic, export, delete, gc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bcd.cli._output import Column, JsonFlag, OutputOption, choose, print_document, print_records

data_app = typer.Typer(
    help="Datasets: import IDC patches, split by patient, pack, explore, export.",
    no_args_is_help=True,
)
console = Console()

_SPLIT_HELP = "Fractions train,validation[,test] (patients, class-stratified)."


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app."""
    app.add_typer(data_app, name="data")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _split_spec(split: str, seed: int, split_file: Path | None, by_patch: bool) -> Any:
    from bcd.data import SplitSpec, parse_fractions

    return SplitSpec(
        parse_fractions(split), seed, str(split_file) if split_file else None, by_patch
    )


def _splits_table(splits: dict[str, Any], title: str = "splits") -> Table:
    table = Table(title=title)
    for column in ("split", "patches", "patients", "no IDC (0)", "IDC (1)", "IDC share"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, info in splits.items():
        counts = info["class_counts"]
        no_idc, idc = int(counts.get("0", 0)), int(counts.get("1", 0))
        share = idc / max(1, no_idc + idc)
        table.add_row(
            split,
            str(info["patches"]),
            str(info["patients"]),
            str(no_idc),
            str(idc),
            f"{share:.1%}",
        )
    return table


@data_app.command("import")
def import_command(
    source: Path = typer.Argument(..., help="IDC_regular_ps50_idx5 folder or the Kaggle zip."),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing dataset."),
    on_small: str = typer.Option("pad", "--on-small", help="Patches under 50x50: pad or skip."),
    split: str = typer.Option("0.7,0.15,0.15", "--split", help=_SPLIT_HELP),
    seed: int = typer.Option(42, "--seed", help="Seed of the split."),
    split_file: Path | None = typer.Option(None, "--split-file", help="Patient lists (JSON/CSV)."),
    by_patch: bool = typer.Option(
        False, "--by-patch", help="Random patch split (leaks patients; warns)."
    ),
    no_split: bool = typer.Option(False, "--no-split", help="Import without splitting."),
    workers: int | None = typer.Option(None, "--workers", help="Decode processes."),
    report: Path | None = typer.Option(None, "--report", help="Also write the report as JSON."),
) -> None:
    """Import IDC patches: parse, validate, decode, pack, split by patient."""
    from bcd.data import import_dataset

    spec = None if no_split else _split_spec(split, seed, split_file, by_patch)
    with _progress() as progress:
        task = progress.add_task("decoding patches", total=None)
        result = import_dataset(
            source,
            name,
            replace=replace,
            on_small=on_small,
            split=spec,
            workers=workers,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    counts = result.class_counts
    rate = result.files / max(result.seconds, 1e-9)
    summary = Table(title=f"dataset {result.name}", show_header=False)
    for key, value in (
        ("files", result.files),
        ("imported patches", result.imported),
        ("patients", result.patients),
        ("no IDC (0) / IDC (1)", f"{counts.get('0', 0)} / {counts.get('1', 0)}"),
        ("padded (smaller than 50x50)", result.padded),
        ("skipped (--on-small skip)", len(result.skipped)),
        ("duplicates", result.duplicates),
        ("rejected", len(result.rejected)),
        ("fingerprint", result.fingerprint),
        ("seconds", f"{result.seconds:.1f} ({rate:.0f} files/s)"),
    ):  # fmt: skip
        summary.add_row(key, str(value))
    console.print(summary)
    if result.splits:
        console.print(_splits_table(result.splits))
    _print_rejected(result.rejected)
    if report is not None:
        report.write_text(json.dumps(result.to_dict(), indent=2))
        console.print(f"report written to {report}")


def _print_rejected(rejected: list[list[str]], limit: int = 20) -> None:
    if not rejected:
        return
    table = Table(title=f"rejected files ({len(rejected)})")
    table.add_column("file")
    table.add_column("reason")
    for path, reason in rejected[:limit]:
        table.add_row(path, reason)
    console.print(table)
    if len(rejected) > limit:
        console.print(f"… and {len(rejected) - limit} more: `bcd data show NAME --rejected`")


@data_app.command("split")
def split_command(
    name: str = typer.Argument(..., help="Dataset name."),
    split: str = typer.Option("0.7,0.15,0.15", "--split", help=_SPLIT_HELP),
    seed: int = typer.Option(42, "--seed", help="Seed of the split."),
    split_file: Path | None = typer.Option(None, "--split-file", help="Patient lists (JSON/CSV)."),
    by_patch: bool = typer.Option(
        False, "--by-patch", help="Random patch split (leaks patients; warns)."
    ),
) -> None:
    """(Re-)split a dataset by patient; the new splits replace the old ones atomically."""
    from bcd.data import split_dataset

    splits = split_dataset(name, _split_spec(split, seed, split_file, by_patch))
    console.print(_splits_table(splits, f"dataset {name}"))


_DATASET_COLUMNS = (
    Column("name", "name"),
    *(Column(key, key, justify="right") for key in ("patches", "patients", "padded", "rejected")),
    Column("splits", "splits", lambda splits: ",".join(splits) or "-"),
    Column("fingerprint", "fingerprint", lambda value: value[:19] + "…"),
)


@data_app.command("list")
def list_command(output: OutputOption = None, as_json: JsonFlag = False) -> None:
    """List imported datasets."""
    from bcd.data import list_datasets

    print_records(list_datasets(), _DATASET_COLUMNS, choose(output, as_json), title="datasets")


@data_app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Dataset name."),
    rejected: bool = typer.Option(False, "--rejected", help="List every rejected file."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a dataset's catalog entry and import report."""
    from bcd.data import describe_dataset, read_import_report

    info = describe_dataset(name)
    report = read_import_report(name)
    print_document(
        {**info, "import_report": report},
        choose(output, as_json),
        lambda: _print_dataset(name, info, report, rejected),
    )


def _print_dataset(name: str, info: dict[str, Any], report: dict[str, Any], rejected: bool) -> None:
    table = Table(title=f"dataset {name}", show_header=False)
    for key in ("source", "patches", "patients", "padded", "rejected", "fingerprint", "created_at"):
        table.add_row(key, str(info[key]))
    table.add_row("split", json.dumps(info["split_config"]) if info["split_config"] else "-")
    console.print(table)
    if info["splits"]:
        console.print(_splits_table(info["splits"]))
    _print_rejected(report["rejected"], limit=len(report["rejected"]) if rejected else 20)


@data_app.command("stats")
def stats_command(
    name: str = typer.Argument(..., help="Dataset name."),
    grid: Path | None = typer.Option(None, "--grid", help="Also write a sample grid PNG."),
    per_patient: bool = typer.Option(False, "--per-patient", help="One row per patient."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Counts per split/class/patient, patch sizes, per-channel mean/std."""
    from bcd.data import dataset_stats, render_grid

    stats = dataset_stats(name)
    if grid is not None:
        render_grid(name, grid)
    print_document(
        stats, choose(output, as_json), lambda: _print_stats(name, stats, grid, per_patient)
    )


def _print_stats(name: str, stats: dict[str, Any], grid: Path | None, per_patient: bool) -> None:
    console.print(_splits_table({"all": stats, **stats["splits"]}, f"dataset {name}"))
    sizes = Table(title="original patch sizes (WxH)")
    sizes.add_column("size")
    sizes.add_column("patches", justify="right")
    for size, count in list(stats["sizes"].items())[:10]:
        sizes.add_row(size, str(count))
    if len(stats["sizes"]) > 10:
        sizes.add_row(f"{len(stats['sizes']) - 10} other sizes", "…")
    console.print(sizes)
    console.print(f"smaller than 50x50 (padded): {stats['padded']}")
    mean = ", ".join(f"{v:.4f}" for v in stats["channel_mean"])
    std = ", ".join(f"{v:.4f}" for v in stats["channel_std"])
    console.print(
        f"normalization ({stats['normalization_split']} split, RGB, 0-1): mean [{mean}] std [{std}]"
    )
    patients = stats["per_patient"]
    if per_patient:
        table = Table(title="patients")
        for column in ("patient", "split", "patches", "no IDC", "IDC"):
            table.add_column(column, justify="left" if column in ("patient", "split") else "right")
        for row in patients:
            table.add_row(row["patient_id"], row["split"] or "-", str(row["patches"]),
                          str(row["no_idc"]), str(row["idc"]))  # fmt: skip
        console.print(table)
    else:
        sizes_per_patient = sorted(row["patches"] for row in patients)
        console.print(
            f"patches per patient: min {sizes_per_patient[0]}, median "
            f"{sizes_per_patient[len(sizes_per_patient) // 2]}, max {sizes_per_patient[-1]} "
            "(--per-patient lists them)"
        )
    if grid is not None:
        console.print(f"sample grid written to {grid}")


@data_app.command("mosaic")
def mosaic_command(
    name: str = typer.Argument(..., help="Dataset name."),
    patient: str = typer.Argument(..., help="Patient id."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Tint IDC patches red."),
    max_side: int = typer.Option(2048, "--max-side", help="Longest side of the image, pixels."),
) -> None:
    """Reassemble a patient's slide from patch coordinates, labels as an overlay."""
    from bcd.data import render_mosaic

    path = render_mosaic(name, patient, out, overlay=overlay, max_side=max_side)
    console.print(f"mosaic of patient {patient} written to {path}")


@data_app.command("export")
def export_command(
    name: str = typer.Argument(..., help="Dataset name."),
    out: Path = typer.Argument(..., help="New folder to write."),
    format: str = typer.Option("imagefolder", "--format", help="imagefolder or lst."),
    split: list[str] = typer.Option([], "--split", help="Splits to export (default: all)."),
) -> None:
    """Write a dataset as loose PNGs (imagefolder, or images + .lst lists)."""
    from bcd.data import export_dataset

    with _progress() as progress:
        task = progress.add_task("writing PNGs", total=None)
        written = export_dataset(
            name,
            out,
            format=format,
            splits=split or None,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for split_name, count in written.items():
        console.print(f"{split_name}: {count} files")
    console.print(f"exported to {out}")


@data_app.command("delete")
def delete_command(
    name: str = typer.Argument(..., help="Dataset name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a dataset (catalog entry and packed files)."""
    from bcd.data import delete_dataset, describe_dataset

    describe_dataset(name)
    if not yes:
        typer.confirm(f"delete dataset {name!r} and its files?", abort=True)
    delete_dataset(name)
    console.print(f"deleted dataset {name}")


def _size_text(size_bytes: int) -> str:
    if size_bytes >= 1e9:
        return f"{size_bytes / 1e9:.1f} GB"
    if size_bytes >= 1e6:
        return f"{size_bytes / 1e6:.1f} MB"
    return f"{size_bytes / 1e3:.1f} kB"


@data_app.command("gc")
def gc_command(
    dry_run: bool = typer.Option(
        False, "--dry-run", "-n", help="Only list what would be removed; remove nothing."
    ),
) -> None:
    """Remove what interrupted imports and splits left behind.

    That is every unfinished .partial-* folder whose import process is gone
    (a killed "bcd data import"), and every finished folder no dataset uses
    that is older than 10 minutes. Folders of imports still running are kept.
    """
    from bcd.data import collect_garbage

    report = collect_garbage(dry_run=dry_run)
    if not report.leftovers:
        console.print("nothing to remove: no leftovers of interrupted imports")
        return
    verb = "would remove" if dry_run else "removed"
    table = Table(title=f"{verb} {len(report.leftovers)} folder(s)")
    for column in ("folder", "size", "reason"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for leftover in report.leftovers:
        table.add_row(leftover.key, _size_text(leftover.size_bytes), leftover.reason)
    console.print(table)
    console.print(f"{verb} {len(report.leftovers)} folder(s), {_size_text(report.size_bytes)}")
