"""CLI commands: ``bcd slide analyze`` and ``bcd slide from-patches``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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
from rich.table import Table

from bcd.errors import InvalidInputError

console = Console()
slide_app = typer.Typer(help="Whole-slide IDC analysis: heatmaps, reports, dataset slides.")


def _context_json(spec: Any) -> dict[str, Any] | None:
    """The model's slide context as ``model.json`` stores it, or ``None``."""
    return spec.slide_context.to_json() if spec.slide_context else None


@contextmanager
def _classifier(
    endpoint: str | None, model_dir: Path | None
) -> Iterator[tuple[Callable[[Any], Any], dict[str, Any]]]:
    """The tile classifier: a model folder, or a registered endpoint (in-process runtime)."""
    if model_dir is not None:
        from bcd.serving import ModelRuntime

        runtime = ModelRuntime(model_dir, max_batch_size=256, name="slide")
        try:
            yield (
                (lambda tiles: runtime.predict(list(tiles))),
                {
                    "model": model_dir.name,
                    "decision_threshold": runtime.spec.decision_threshold,
                    "slide_context": _context_json(runtime.spec),
                    "directory": runtime.spec.directory,
                },
            )
        finally:
            runtime.close()
        return
    from bcd.config import get_settings
    from bcd.serving import local_service

    settings = get_settings()
    name = endpoint or settings.default_endpoint
    service = local_service(settings)
    endpoints = service.router
    if endpoints.needs_refresh(name):
        endpoints.refresh(name)
    with endpoints.use(name) as loaded:
        variant = endpoints.choose_for_slides(loaded)

        def predict(tiles: Any) -> Any:
            return variant.runtime.predict(list(tiles))

        yield (
            predict,
            {
                "endpoint": name,
                "variant": variant.name,
                "model": variant.model_name,
                "decision_threshold": variant.runtime.spec.decision_threshold,
                "slide_context": _context_json(variant.runtime.spec),
                "directory": variant.runtime.spec.directory,
            },
        )


@contextmanager
def _unpacked(slide: Path) -> Iterator[Path]:
    """The slide to read: itself, or the folder its zipped DICOM series unpacks to (for a while).

    Raises:
        InvalidArchiveError: A zip that is not a readable, single DICOM WSI series.
        ArchiveTooLargeError: Over ``BCD_MAX_ARCHIVE_ENTRIES`` / ``BCD_MAX_ARCHIVE_BYTES``.
    """
    import tempfile

    from bcd.config import get_settings
    from bcd.slides._archives import ArchiveLimits, extract_dicom_series, looks_like_zip

    if not slide.is_file() or not looks_like_zip(slide):
        yield slide
        return
    limits = ArchiveLimits.from_settings(get_settings())
    with tempfile.TemporaryDirectory(prefix="bcd-series-") as scratch:
        yield extract_dicom_series(slide, Path(scratch) / "series", limits, name=slide.name)


def _explainer(explain: bool | None, model: dict[str, Any]) -> tuple[Any, str | None]:
    """The Grad-CAM explainer of the scoring model, or why there is none.

    ``explain`` ``None`` (the default) explains when it can and says why not
    otherwise; ``True`` insists; ``False`` skips.

    Raises:
        ExplanationsUnavailableError: With ``--explain`` when torch or ``model.pt`` is missing.
    """
    from bcd.errors import ExplanationsUnavailableError
    from bcd.slides._explain import explanations_supported, load_explainer

    directory = model.pop("directory", None)
    if explain is False or (explain is None and explanations_supported() is not None):
        return None, None
    try:
        return load_explainer(directory), None
    except ExplanationsUnavailableError as error:
        if explain:
            raise
        return None, error.message


def _summary_table(report: dict[str, Any], out: Path) -> Table:
    table = Table(show_header=False, box=None)
    tiles = report["tiles"]
    table.add_row("tissue tiles", f"{tiles['tissue']} of {tiles['grid']}")
    table.add_row("IDC-positive tissue", f"{100 * report['idc_positive_fraction']:.1f} %")
    table.add_row("IDC area", f"{report['idc_area_mm2']:.2f} mm²")
    analysis = report["analysis"]
    radius = analysis.get("context_radius") or 0
    table.add_row(
        "threshold",
        f"{analysis['threshold']:.3f} "
        + (f"(slide context, radius {radius})" if radius else "(each tile alone)"),
    )
    region = report.get("largest_region")
    if region:
        table.add_row(
            "largest IDC region",
            f"{region['tiles']} tiles at x={region['bbox']['x']}, y={region['bbox']['y']}",
        )
    truth = report.get("ground_truth")
    if truth:
        auc = truth.get("auc")
        bac = truth.get("balanced_accuracy")
        f1 = truth.get("f1")
        table.add_row(
            "against ground truth",
            f"AUC {auc if auc is None else f'{auc:.3f}'}, "
            f"BAC {bac if bac is None else f'{bac:.3f}'}, F1 {f1 if f1 is None else f'{f1:.3f}'}",
        )
    table.add_row("speed", f"{report['timings']['tiles_per_second']} tiles/s")
    for note in report.get("notes", []):
        table.add_row("note", note)
    table.add_row("outputs", str(out))
    return table


def analyze(
    slide: Path = typer.Argument(
        ...,
        help="Slide or region: PNG, JPEG, TIFF, or with bcd[slides] SVS/NDPI/… and DICOM "
        "(one .dcm of the series, its folder, or a .zip of it).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for heatmap, maps and reports."),
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        "-e",
        help="Endpoint whose model scores tiles (default: BCD_DEFAULT_ENDPOINT).",
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="Score with a model folder (model.json + ONNX) instead."
    ),
    truth: Path | None = typer.Option(
        None, "--truth", help="Ground truth (truth.npy/truth.png from from-patches) for metrics."
    ),
    stride: int = typer.Option(
        50, help="Step between tiles in model pixels (50 = no overlap; at least 8)."
    ),
    threshold: float | None = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="IDC probability at which a tile is positive (default: the model's calibrated "
        "decision_threshold from model.json, else 0.5).",
    ),
    mpp: float | None = typer.Option(None, help="Microns per pixel, overriding the file's."),
    model_mpp: float = typer.Option(4.0, help="Resolution of the model's training patches."),
    all_tiles: bool = typer.Option(False, "--all-tiles", help="Score background tiles too."),
    context: bool = typer.Option(
        True,
        "--context/--no-context",
        help="Combine each tile's score with its neighbours' when the model has a fitted "
        "slide context (model.json slide_context; stride 50 only). --no-context scores "
        "every tile alone, as the single-patch API does.",
    ),
    top_k: int = typer.Option(12, help="How many of the most suspicious tiles to list."),
    batch_size: int = typer.Option(256, help="Tiles per inference call."),
    explain: bool | None = typer.Option(
        None,
        "--explain/--no-explain",
        help="Grad-CAM explanations of the top tiles (explanations/ and a report panel), from "
        "the model's torch weights (model.pt). Default: on when torch is installed.",
    ),
    geojson: Path | None = typer.Option(
        None,
        "--geojson",
        help="Also write the IDC regions here, as GeoJSON annotations QuPath imports "
        "(File > Import objects, or drag and drop); OUT/regions.geojson has them too.",
    ),
    csv: Path | None = typer.Option(
        None,
        "--csv",
        help="Also write every scored tile's probabilities here as CSV (OUT/tiles.csv too).",
    ),
) -> None:
    """Score every tissue tile of a slide; write heatmap, probability map and reports."""
    from bcd.config import get_settings
    from bcd.slides import AnalysisOptions, analyze_file, load_truth

    if endpoint and model_dir:
        raise InvalidInputError("give --endpoint or --model-dir, not both")
    options = AnalysisOptions(
        max_tiles=get_settings().max_slide_tiles,
        stride=stride,
        threshold=threshold,
        mpp=mpp,
        model_mpp=model_mpp,
        detect_tissue=not all_tiles,
        context=context,
        top_k=top_k,
        batch_size=batch_size,
    ).validate()
    truth_map = load_truth(truth) if truth else None
    with (
        _unpacked(slide) as source,
        _classifier(endpoint, model_dir) as (predict, model),
        Progress(
            TextColumn("[bold]scoring tiles"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("tiles", total=None)
        explainer, unexplained = _explainer(explain, model)
        report = analyze_file(
            source,
            predict,
            out,
            options=options,
            truth=truth_map,
            model=model,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            filename=slide.name,
            explainer=explainer,
        )
    _copy_exports(out, {"regions.geojson": geojson, "tiles.csv": csv})
    console.print(_summary_table(report, out))
    if unexplained:
        console.print(f"[yellow]no explanations:[/] {unexplained}")


def _copy_exports(out: Path, targets: dict[str, Path | None]) -> None:
    """Copy exports from the output folder to where the user asked for them."""
    import shutil

    for name, target in targets.items():
        if target is None or target.resolve() == (out / name).resolve():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / name, target)
        console.print(f"{name} → {target}")


def from_patches(
    patient_dir: Path = typer.Argument(..., help="One patient's folder: <patient>/<0|1>/*.png."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for slide.png, truth.npy/.png."),
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        "-e",
        help="Also analyse the slide on this endpoint (into OUT/analysis).",
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="Also analyse the slide with this model folder."
    ),
) -> None:
    """Reassemble a patient's dataset patches into a slide and its ground-truth map."""
    from bcd.slides import AnalysisOptions, analyze_file, reassemble_patient, write_reassembled

    with console.status("reassembling patches"):
        slide = reassemble_patient(patient_dir)
        paths = write_reassembled(slide, out)
    console.print(
        f"[bold]{slide.patches}[/] patches ({int((slide.truth == 1).sum())} IDC) → "
        f"{paths['slide.png']} ({slide.image.shape[1]}x{slide.image.shape[0]} px), "
        f"ground truth {paths['truth.npy']}"
    )
    for problem in slide.problems[:10]:
        console.print(f"[yellow]skipped[/] {problem}")
    if len(slide.problems) > 10:
        console.print(f"[yellow]… and {len(slide.problems) - 10} more skipped files[/]")
    if endpoint is None and model_dir is None:
        console.print(
            f"next: bcd slide analyze {paths['slide.png']} --truth {paths['truth.npy']} "
            f"--out {out / 'analysis'}"
        )
        return
    with _classifier(endpoint, model_dir) as (predict, model), console.status("analysing"):
        model.pop("directory", None)
        report = analyze_file(
            paths["slide.png"],
            predict,
            out / "analysis",
            options=AnalysisOptions(),
            truth=slide.truth,
            model=model,
        )
    console.print(_summary_table(report, out / "analysis"))


def register(app: typer.Typer) -> None:
    """Add ``bcd slide …`` to the root app."""
    slide_app.command("analyze")(analyze)
    slide_app.command("from-patches")(from_patches)
    app.add_typer(slide_app, name="slide")
