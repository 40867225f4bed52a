"""CLI commands: ``bcd models``, ``bcd endpoint-configs``, ``bcd endpoints``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer
from rich.console import Console

from bcd.cli._output import Column, JsonFlag, OutputOption, choose, print_document, print_records
from bcd.errors import InvalidInputError, JobFailedError

console = Console()

models_app = typer.Typer(help="Register models (a training job's artifacts or a model folder).")
configs_app = typer.Typer(help="Endpoint configs: production variants with traffic weights.")
endpoints_app = typer.Typer(help="Endpoints: deploy, update, describe and delete.")

_VARIANT_ALIASES = {
    "variantname": "VariantName",
    "name": "VariantName",
    "modelname": "ModelName",
    "model": "ModelName",
    "initialinstancecount": "InitialInstanceCount",
    "instances": "InitialInstanceCount",
    "initialvariantweight": "InitialVariantWeight",
    "weight": "InitialVariantWeight",
}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else ""


def _table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str]], empty: str, output: str
) -> None:
    print_records(
        rows,
        [Column(title, key, _when if "Time" in key else None) for title, key in columns],
        output,
        empty=empty,
    )


def parse_variant(spec: str) -> dict[str, Any]:
    """Parse ``VariantName=A,ModelName=m,InitialInstanceCount=1,InitialVariantWeight=0.8``.

    Short keys ``name``, ``model``, ``instances`` and ``weight`` work too.

    Raises:
        InvalidInputError: A part is not ``key=value``, a key is unknown, or a number is bad.
    """
    variant: dict[str, Any] = {}
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        key, separator, value = part.partition("=")
        canonical = _VARIANT_ALIASES.get(key.strip().lower())
        if not separator or canonical is None:
            raise InvalidInputError(
                f"cannot read variant part {part!r}; write "
                "VariantName=A,ModelName=MODEL,InitialInstanceCount=1,InitialVariantWeight=1"
            )
        value = value.strip()
        try:
            if canonical == "InitialInstanceCount":
                variant[canonical] = int(value)
            elif canonical == "InitialVariantWeight":
                variant[canonical] = float(value)
            else:
                variant[canonical] = value
        except ValueError as exc:
            raise InvalidInputError(f"{canonical} must be a number, not {value!r}") from exc
    return variant


@models_app.command("create")
def create_model(
    name: str = typer.Argument(..., help="Model name (letters, digits, hyphens)."),
    model_data: str | None = typer.Option(
        None, "--model-data", help="Artifact folder or URL holding model.onnx + model.json."
    ),
    training_job: str | None = typer.Option(
        None, "--training-job", help="A completed training job."
    ),
    tuning_job: str | None = typer.Option(
        None, "--tuning-job", help="A tuning job (its best job)."
    ),
) -> None:
    """Register a model from exactly one source."""
    from bcd import registry

    registry.create_model(
        name, model_data=model_data, training_job=training_job, tuning_job=tuning_job
    )
    source = registry.describe_model(name)["PrimaryContainer"]["ModelDataUrl"]
    console.print(f"created model [bold]{name}[/] from {source}", highlight=False)


@models_app.command("list")
def list_models(
    name_contains: str | None = typer.Option(None, "--name-contains", help="Filter by substring."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List models, newest first."""
    from bcd import registry

    _table(
        registry.list_models(name_contains),
        [("model", "ModelName"), ("created (UTC)", "CreationTime")],
        "no models yet (bcd models create NAME --model-data FOLDER)",
        choose(output, as_json),
    )


@models_app.command("describe")
def describe_model(
    name: str = typer.Argument(..., help="Model name."), output: OutputOption = None
) -> None:
    """Show a model, with its stored model.json (JSON unless --output says otherwise)."""
    from bcd import registry

    print_document(registry.describe_model(name), choose(output, default="json"))


@models_app.command("delete")
def delete_model(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Delete a model (refused while an endpoint config uses it)."""
    from bcd import registry

    registry.delete_model(name)
    console.print(f"deleted model [bold]{name}[/]", highlight=False)


@configs_app.command("create")
def create_endpoint_config(
    name: str = typer.Argument(..., help="Endpoint config name."),
    variant: list[str] | None = typer.Option(
        None,
        "--variant",
        help=(
            "A production variant, repeatable: "
            "VariantName=A,ModelName=MODEL,InitialInstanceCount=1,InitialVariantWeight=0.8"
        ),
    ),
    model: str | None = typer.Option(None, "--model", help="Shortcut: one variant serving MODEL."),
    instance_count: int = typer.Option(1, "--instance-count", help="Replicas with --model."),
) -> None:
    """Create an endpoint config of one or more production variants."""
    from bcd import registry

    if bool(variant) == bool(model):
        raise InvalidInputError("give either --model MODEL or one or more --variant specs")
    variants = (
        [parse_variant(spec) for spec in variant]
        if variant
        else [
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": instance_count,
                "InitialVariantWeight": 1.0,
            }
        ]
    )
    registry.create_endpoint_config(name, variants)
    console.print(
        f"created endpoint config [bold]{name}[/] with {len(variants)} variant(s)",
        highlight=False,
    )


@configs_app.command("list")
def list_endpoint_configs(
    name_contains: str | None = typer.Option(None, "--name-contains", help="Filter by substring."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List endpoint configs, newest first."""
    from bcd import registry

    _table(
        registry.list_endpoint_configs(name_contains),
        [("endpoint config", "EndpointConfigName"), ("created (UTC)", "CreationTime")],
        "no endpoint configs yet (bcd endpoint-configs create NAME --model MODEL)",
        choose(output, as_json),
    )


@configs_app.command("describe")
def describe_endpoint_config(
    name: str = typer.Argument(..., help="Config name."), output: OutputOption = None
) -> None:
    """Show an endpoint config and its variants (JSON unless --output says otherwise)."""
    from bcd import registry

    print_document(registry.describe_endpoint_config(name), choose(output, default="json"))


@configs_app.command("delete")
def delete_endpoint_config(name: str = typer.Argument(..., help="Config name.")) -> None:
    """Delete an endpoint config (refused while an endpoint runs it)."""
    from bcd import registry

    registry.delete_endpoint_config(name)
    console.print(f"deleted endpoint config [bold]{name}[/]", highlight=False)


def _report_endpoint(name: str, verb: str) -> None:
    from bcd import registry

    description = registry.describe_endpoint(name)
    status = description["EndpointStatus"]
    if status == registry.FAILED:
        raise JobFailedError(f"endpoint {name} is Failed: {description.get('FailureReason')}")
    console.print(
        f"{verb} endpoint [bold]{name}[/]: {status}, config "
        f"{description['EndpointConfigName']}, version {description['Version']}",
        highlight=False,
    )


@endpoints_app.command("create")
def create_endpoint(
    name: str = typer.Argument(..., help="Endpoint name."),
    config: str = typer.Option(..., "--config", help="The endpoint config to run."),
) -> None:
    """Create an endpoint and wait until it is InService (or report why it failed)."""
    from bcd import registry

    with console.status(f"creating endpoint {name}…"):
        registry.create_endpoint(name, config)
    _report_endpoint(name, "created")


@endpoints_app.command("update")
def update_endpoint(
    name: str = typer.Argument(..., help="Endpoint name."),
    config: str = typer.Option(..., "--config", help="The new endpoint config."),
) -> None:
    """Move an endpoint to another config; servers switch once the new one is warm."""
    from bcd import registry

    with console.status(f"updating endpoint {name}…"):
        registry.update_endpoint(name, config)
    description = registry.describe_endpoint(name)
    if description["EndpointConfigName"] != config:
        raise JobFailedError(
            f"update of endpoint {name} failed: {description.get('FailureReason')}"
        )
    _report_endpoint(name, "updated")


@endpoints_app.command("list")
def list_endpoints(
    name_contains: str | None = typer.Option(None, "--name-contains", help="Filter by substring."),
    status: str | None = typer.Option(None, "--status", help="Only endpoints in this status."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List endpoints with their status and config."""
    from bcd import registry

    if status is not None and status not in registry.ENDPOINT_STATUSES:
        raise InvalidInputError(f"--status must be one of {', '.join(registry.ENDPOINT_STATUSES)}")
    _table(
        registry.endpoint_summaries(name_contains, status),
        [
            ("endpoint", "EndpointName"),
            ("status", "EndpointStatus"),
            ("config", "EndpointConfigName"),
            ("modified (UTC)", "LastModifiedTime"),
        ],
        "no endpoints yet (bcd endpoints create NAME --config CONFIG)",
        choose(output, as_json),
    )


@endpoints_app.command("describe")
def describe_endpoint(
    name: str = typer.Argument(..., help="Endpoint name."), output: OutputOption = None
) -> None:
    """Show an endpoint, its variants and their invocation stats (JSON by default)."""
    from bcd import registry

    print_document(registry.describe_endpoint(name), choose(output, default="json"))


@endpoints_app.command("delete")
def delete_endpoint(name: str = typer.Argument(..., help="Endpoint name.")) -> None:
    """Delete an endpoint; its config stays, so it can be created again."""
    from bcd import registry

    registry.delete_endpoint(name)
    console.print(f"deleted endpoint [bold]{name}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``models``, ``endpoint-configs`` and ``endpoints`` to the root app."""
    app.add_typer(models_app, name="models")
    app.add_typer(configs_app, name="endpoint-configs")
    app.add_typer(endpoints_app, name="endpoints")
