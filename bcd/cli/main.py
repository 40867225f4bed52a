"""The ``bcd`` command line: a thin layer over the services.

Each resource has its own module exposing ``register(app)``; this module wires
them together and maps :mod:`bcd.errors` to exit codes, in one table. Heavy
libraries (torch, onnxruntime) are imported inside commands only, so
``bcd --help`` is instant.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from bcd import errors

# One place maps error classes to exit codes; the most specific class wins.
EXIT_CODES: dict[type[errors.BcdError], int] = {
    errors.InvalidInputError: 2,
    errors.DependencyMissingError: 3,
    errors.NotFoundError: 4,
    errors.ConflictError: 5,
    errors.JobFailedError: 6,
    errors.BcdTimeoutError: 7,
    errors.AuthenticationError: 8,
    errors.PermissionDeniedError: 8,
    errors.RateLimitedError: 8,
    errors.NotReadyError: 9,
}

_COMMAND_MODULES = (
    "data",
    "train",
    "jobs",
    "tune",
    "registry",
    "serve",
    "keys",
    "slides",
    "transform",
    "evaluate",
    "quickstart",
)


class _BcdGroup(TyperGroup):
    """Maps bcd errors to a one-line message and an exit code, for every command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from bcd.cli._output import hide_flag_types

        super().__init__(*args, **kwargs)
        hide_flag_types(self)  # flags take no value: no "<bool>" in --help

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except errors.BcdError as error:
            # Escaped: messages hold literal brackets, e.g. pip install 'bcd[s3]'.
            message = escape(error.message)
            Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
            raise typer.Exit(exit_code_for(error)) from None


app = typer.Typer(
    cls=_BcdGroup,
    name="bcd",
    help=(
        "bcd: detect invasive ductal carcinoma (IDC) in H&E histopathology, "
        "with the whole ML lifecycle on one machine: data, training, tuning, "
        "deployment, serving, slides and evaluation."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def exit_code_for(error: errors.BcdError) -> int:
    """The CLI exit code of ``error`` (1 for classes with no entry)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]  # type: ignore[index]
    return 1


def build_app() -> typer.Typer:
    """Register every command module on the root app (once)."""
    if not getattr(app, "_bcd_registered", False):
        for name in _COMMAND_MODULES:
            module = importlib.import_module(f"bcd.cli.{name}")
            module.register(app)
        app._bcd_registered = True  # type: ignore[attr-defined]
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bcd`` console script."""
    try:
        build_app()(args=argv, standalone_mode=True)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
