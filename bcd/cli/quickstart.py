"""``bcd quickstart``: the whole journey in one command.

Import the IDC patches (split by patient), train the small CNN with the
bundled model's recipe, calibrate it on the validation split, register the
model, and deploy it to an endpoint — the same calls a notebook makes through
:func:`bcd.client`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console()

# The recipe the bundled model was trained with (see MODEL_CARD.md).
BUNDLED_RECIPE: dict[str, str] = {
    "architecture": "deep",
    "epochs": "28",
    "mini_batch_size": "128",
    "learning_rate": "0.003",
    "optimizer": "adam",
    "lr_scheduler": "cosine",
    "weight_decay": "0.0001",
    "augmentation_type": "crop_color_transform",
    "stain_jitter": "0.1",
    "dropout": "0.3",
    "class_weights": "balanced",
    "model_selection_metric": "validation:auc",
    "seed": "2",
}
#: The bundled model's slide-context radius (chosen on validation, see docs/experiments.md).
BUNDLED_CONTEXT_RADIUS = 3


def register(app: typer.Typer) -> None:
    """Add ``bcd quickstart`` to the root app."""
    app.command("quickstart")(quickstart_command)


def quickstart_command(
    source: Path = typer.Argument(
        ...,
        help="The IDC_regular_ps50_idx5 folder (or the Kaggle zip).",
        exists=True,
        readable=True,
    ),
    dataset: str = typer.Option("idc", help="Dataset name to import as (reused if it exists)."),
    job_name: str = typer.Option("quickstart-cnn", "--job-name", help="Training job name."),
    endpoint: str = typer.Option("quickstart", help="Endpoint (and model) name to deploy to."),
    epochs: int = typer.Option(
        int(BUNDLED_RECIPE["epochs"]), min=1, help="Training epochs (fewer for a quick look)."
    ),
    export: Path | None = typer.Option(
        None, help="Also copy the trained model folder here (model.onnx + model.json)."
    ),
) -> None:
    """Reproduce the bundled model end to end: import → train → calibrate → model → endpoint."""
    import shutil

    from bcd.cli.jobs import follow_and_report
    from bcd.clients import Client
    from bcd.config import get_settings
    from bcd.data import describe_dataset, import_dataset
    from bcd.errors import NotFoundError

    settings = get_settings()
    client = Client(settings)

    try:
        describe_dataset(dataset, settings)
        console.print(f"1/5 dataset {dataset!r} exists; reusing it")
    except NotFoundError:
        console.print(f"1/5 importing {source} as {dataset!r} (patient-level split, seed 42)")
        with console.status("importing patches"):
            report = import_dataset(source, dataset, settings=settings)
        console.print(f"    {report.imported} patches imported, {len(report.rejected)} rejected")

    console.print(f"2/5 training job {job_name!r} (cnn, {epochs} epochs)")
    hyperparameters = {**BUNDLED_RECIPE, "epochs": str(epochs)}
    client.create_training_job(
        TrainingJobName=job_name,
        AlgorithmSpecification={"AlgorithmName": "cnn", "TrainingInputMode": "File"},
        HyperParameters=hyperparameters,
        InputDataConfig=[
            {"ChannelName": "train", "Uri": f"dataset://{dataset}/train"},
            {"ChannelName": "validation", "Uri": f"dataset://{dataset}/validation"},
        ],
        ResourceConfig={"InstanceCount": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 6 * 3600},
    )
    job = follow_and_report(client, job_name, logs=False)
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    _calibrate(artifact, dataset, settings)

    console.print(f"4/5 model {endpoint!r} from {artifact}")
    client.create_model(ModelName=endpoint, PrimaryContainer={"ModelDataUrl": artifact})
    client.create_endpoint_config(
        EndpointConfigName=endpoint,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": endpoint,
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    console.print(f"5/5 endpoint {endpoint!r}")
    client.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)
    status = client.describe_endpoint(EndpointName=endpoint)["EndpointStatus"]
    console.print(f"    {endpoint}: {status}")

    if export is not None:
        from bcd.storage import FsspecArtifactStore

        store = FsspecArtifactStore(artifact, settings.storage_options())
        target = export.resolve()
        if target.exists():
            shutil.rmtree(target)
        store.get_dir("", target)
        console.print(f"    model copied to {target}")

    console.print(f"\nserve it:  bcd serve --default-endpoint {endpoint}")
    console.print(f"evaluate:  bcd evaluate {endpoint} --dataset {dataset} --split test --out eval")


def _calibrate(artifact: str, dataset: str, settings: object) -> None:
    """Fit Platt scaling, the decision threshold and the slide context on the
    validation split, in place, and print the test split's BAC and AUC.

    The model is not registered yet, so its ``model.json`` may still change. A
    remote artifact, a dataset without validation and test splits, or a
    validation split the model separates perfectly (nothing to fit) leaves the
    model uncalibrated with a note.
    """
    from bcd.config import Settings
    from bcd.errors import InvalidInputError, NotFoundError
    from bcd.evaluation import evaluate

    folder = Path(artifact)
    if not (folder / "model.json").is_file():
        console.print("3/5 calibration skipped: the artifact is not a local folder")
        return
    assert isinstance(settings, Settings)

    def fit(context_radius: int) -> Any:
        # Same validation data each time: the context refits the same calibration first.
        return evaluate(
            str(folder),
            dataset=dataset,
            split="test",
            validation_split="validation",
            calibrate=True,
            context_radius=context_radius,
            bootstrap=0,
            settings=settings,
        )

    with console.status("3/5 calibrating on the validation split"):
        try:
            result = fit(0)
        except (InvalidInputError, NotFoundError) as error:
            console.print(f"3/5 calibration skipped: {error}")
            return
    metrics = result.metrics
    console.print(
        f"3/5 calibrated: temperature {result.temperature:.3f}, logit bias "
        f"{result.logit_bias:.3f}, decision threshold {result.threshold:.3f}; test split: "
        f"BAC {metrics['balanced_accuracy'].value:.3f}, AUC {metrics['roc_auc'].value:.3f}"
    )
    with console.status("3/5 fitting the slide context on the validation split"):
        try:
            result = fit(BUNDLED_CONTEXT_RADIUS)
        except InvalidInputError as error:
            console.print(f"3/5 slide context skipped: {error}")
            return
    metrics = result.metrics
    console.print(
        f"3/5 slide context (radius {BUNDLED_CONTEXT_RADIUS}) for whole-slide analysis; test "
        f"split scored with it: BAC {metrics['balanced_accuracy'].value:.3f}, "
        f"AUC {metrics['roc_auc'].value:.3f}"
    )
