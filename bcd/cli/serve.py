"""CLI commands: ``bcd serve`` (the REST server) and ``bcd predict IMAGE…``."""

from __future__ import annotations

import json
import logging
import mimetypes
import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bcd.config import get_settings
from bcd.errors import InvalidInputError

# Images per request when `bcd predict` sends many files.
_PREDICT_CHUNK = 256


def serve(
    host: str = typer.Option(None, help="Address to bind (default BCD_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default BCD_PORT, 8080)."),
    bundled: bool = typer.Option(
        False, "--bundled", help="Register the bundled model and serve it as the default endpoint."
    ),
    endpoint: list[str] = typer.Option(
        None, "--endpoint", help="Serve only this endpoint (repeat for several); default all."
    ),
    default_endpoint: str = typer.Option(
        None, help="Endpoint behind POST /predict-breast-cancer (default BCD_DEFAULT_ENDPOINT)."
    ),
    require_api_key: bool = typer.Option(
        None,
        "--require-api-key/--no-require-api-key",
        help="Require API keys (default: only when binding to a non-loopback address).",
    ),
    access_log: bool = typer.Option(False, help="Log every request line (no bodies)."),
    workers: int = typer.Option(
        None,
        min=1,
        max=64,
        help="Server processes sharing the port, each with its own models "
        "(default BCD_SERVE_WORKERS, 1); 2 serves the most single-patch requests on 2 cores.",
    ),
    header_timeout: float = typer.Option(
        None,
        min=0.1,
        help="Seconds a connection has to send each request head; slower ones are closed "
        "(default BCD_HEADER_TIMEOUT_S, 10).",
    ),
    keep_alive: float = typer.Option(
        None,
        min=0.1,
        help="Seconds an idle connection stays open between requests "
        "(default BCD_KEEP_ALIVE_S, 5).",
    ),
    max_connections: int = typer.Option(
        None,
        min=1,
        help="Open connections (or requests in flight) per process above which requests get 503 "
        "(default BCD_MAX_CONNECTIONS, 1000).",
    ),
) -> None:
    """Serve the REST API (and the web app) with uvicorn: models load in the background."""
    import uvicorn

    from bcd.serving.app import create_app, describe_security

    settings = get_settings()
    updates: dict[str, object] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    if require_api_key is not None:
        updates["require_api_key"] = require_api_key
    if workers is not None:
        updates["serve_workers"] = workers
    limits = {
        "header_timeout_s": header_timeout,
        "keep_alive_s": keep_alive,
        "max_connections": max_connections,
    }
    updates.update({name: value for name, value in limits.items() if value is not None})
    if bundled:
        from bcd.registry import ensure_bundled_endpoint

        bundled_name = ensure_bundled_endpoint(settings=settings)
        updates["default_endpoint"] = default_endpoint or bundled_name
    elif default_endpoint:
        updates["default_endpoint"] = default_endpoint
    if updates:
        settings = settings.model_copy(update=updates)
    logging.getLogger("bcd").setLevel(settings.log_level.upper())
    only = set(endpoint) if endpoint else None
    security = describe_security(settings)
    console = Console(stderr=True)
    base = f"http://{settings.host}:{settings.port}"
    processes = f", {settings.serve_workers} workers" if settings.serve_workers > 1 else ""
    console.print(
        f"[bold]bcd serve[/] on {base}  (docs {base}/docs, default endpoint "
        f"[cyan]{settings.default_endpoint}[/], API keys "
        f"{'required' if security['api_keys_required'] else 'not required'}{processes})",
        highlight=False,
    )
    from bcd.serving._workers import serve_workers, uvicorn_options

    if settings.serve_workers > 1:
        serve_workers(settings, settings.serve_workers, only=only, access_log=access_log)
        return
    app = create_app(settings, only=only)
    uvicorn.run(app, **uvicorn_options(settings, access_log))


def _content_type(path: Path) -> str:
    if path.suffix.lower() == ".npy":
        return "application/x-npy"
    guessed, _ = mimetypes.guess_type(path.name)
    return (
        guessed if guessed in ("image/png", "image/jpeg", "image/tiff") else "application/x-image"
    )


def multipart_body(files: list[bytes]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body holding ``files``; returns it and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for index, data in enumerate(files):
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="image-{index}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def predict(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, TIFF) or .npy arrays."),
    endpoint: str = typer.Option(None, help="Endpoint to score on (default BCD_DEFAULT_ENDPOINT)."),
    url: str = typer.Option(
        None, help="A bcd server's URL (default BCD_ENDPOINT_URL); unset: score in-process."
    ),
    variant: str = typer.Option(
        None,
        "--variant",
        metavar="NAME",
        help="Pin a production variant (sent as X-Target-Variant, in-process or to --url). "
        "The bundled endpoint has 'fast' (the small CNN, for bulk scoring) and 'accurate' "
        "(the best model, its default); unset: the endpoint's default, by traffic weight. "
        "An unknown name exits 4 (unknown_variant), listing the endpoint's variants.",
    ),
    api_key: str = typer.Option(None, help="API key for --url (default BCD_API_KEY)."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Average 8 rotations/mirrors."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per image."),
) -> None:
    """Score image files on an endpoint and print each verdict and the variant that answered.

    Examples: ``bcd predict patch.png`` (the default endpoint's default variant),
    ``bcd predict *.png --variant fast``, ``bcd predict patch.png --url
    http://127.0.0.1:8080 --variant accurate --json``.
    """
    from bcd.clients import RuntimeClient

    settings = get_settings()
    client = RuntimeClient(settings, endpoint_url=url, api_key=api_key)
    name = endpoint or settings.default_endpoint
    for path in images:
        if not path.is_file():
            raise InvalidInputError(f"{path} is not a file")
    rows: list[tuple[str, dict[str, object]]] = []
    arrays = [path for path in images if path.suffix.lower() == ".npy"]
    pictures = [path for path in images if path.suffix.lower() != ".npy"]
    requests: list[tuple[list[str], bytes, str]] = []
    for path in arrays:
        requests.append(([str(path)], path.read_bytes(), "application/x-npy"))
    for start in range(0, len(pictures), _PREDICT_CHUNK):
        chunk = pictures[start : start + _PREDICT_CHUNK]
        if len(chunk) == 1:
            requests.append(([str(chunk[0])], chunk[0].read_bytes(), _content_type(chunk[0])))
        else:
            body, content_type = multipart_body([path.read_bytes() for path in chunk])
            requests.append(([str(path) for path in chunk], body, content_type))
    for labels, body, content_type in requests:
        response = client.invoke_endpoint(
            EndpointName=name, ContentType=content_type, Body=body, TargetVariant=variant, TTA=tta
        )
        document = json.loads(response["Body"].read())
        answered = {"model": document.get("model"), "variant": document.get("variant")}
        predictions = [{**each, **answered} for each in document["predictions"]]
        if len(labels) == 1 and len(predictions) > 1:  # a .npy batch
            labels = [f"{labels[0]}[{index}]" for index in range(len(predictions))]
        rows.extend(zip(labels, predictions, strict=True))
    if as_json:
        for label, prediction in rows:
            typer.echo(json.dumps({"image": label, **prediction}))
        return
    _print_verdicts(name, rows)


def _print_verdicts(endpoint: str, rows: list[tuple[str, dict[str, object]]]) -> None:
    """A table of verdicts, titled with the endpoint and the variant(s) that answered."""
    answered = ", ".join(dict.fromkeys(str(prediction["variant"]) for _, prediction in rows))
    console = Console()
    table = Table(title=f"endpoint {endpoint} · variant {answered}")
    table.add_column("image")
    table.add_column("P(IDC)", justify="right")
    table.add_column("verdict")
    for label, prediction in rows:
        probabilities = prediction["probabilities"]
        assert isinstance(probabilities, list)
        style = "red" if prediction["cancer_detected"] else "green"
        table.add_row(label, f"{probabilities[1]:.3f}", f"[{style}]{prediction['message']}[/]")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("serve")(serve)
    app.command("predict")(predict)
