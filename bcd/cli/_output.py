"""How list, describe and metrics commands print: ``--output table|json|csv``.

Like the AWS CLI, every such command takes ``--output`` (``-o``), also set by
the ``BCD_OUTPUT`` environment variable. ``json`` prints the records as the
services return them; ``csv`` prints one row per record (a description becomes
``field,value`` rows with dotted field names); ``table`` is for people, and a
table too wide for the terminal is turned on its side (field names down the
first column, records across, as many as fit) rather than cutting names.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class OutputFormat(enum.StrEnum):
    """The formats of ``--output``."""

    table = "table"
    json = "json"
    csv = "csv"


OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        envvar="BCD_OUTPUT",
        case_sensitive=False,
        show_default=False,
        help="Output format: table, json or csv.",
    ),
]
# The older spelling of --output json, kept so existing scripts work.
JsonFlag = Annotated[bool, typer.Option("--json", hidden=True, help="Same as --output json.")]


def choose(output: OutputFormat | None, as_json: bool = False, default: str = "table") -> str:
    """The format to print: ``--json``, else ``--output`` / ``BCD_OUTPUT``, else ``default``."""
    if as_json:
        return "json"
    return output.value if output is not None else default


@dataclass(frozen=True)
class Column:
    """One column of a record listing.

    Attributes:
        header: The table heading.
        key: The record's key (also the CSV heading).
        text: How a table shows the value (default ``str``; ``None`` shows ``-``).
        justify: ``left`` or ``right``.
    """

    header: str
    key: str
    text: Callable[[Any], str] | None = None
    justify: str = "left"

    def cell(self, record: Mapping[str, Any]) -> str:
        """The table text of this column for ``record``."""
        value = record.get(self.key)
        if self.text is not None:
            return self.text(value)
        return "-" if value is None else str(value)


def json_default(value: Any) -> Any:
    """JSON for what ``json`` cannot encode: datetimes as ISO 8601, the rest as text."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=json_default)
    return str(value)


def print_json(document: Any) -> None:
    """Print ``document`` as indented JSON (plain text, safe to pipe)."""
    typer.echo(json.dumps(document, indent=2, default=json_default))


def print_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a header row and ``rows`` as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow([_csv_value(value) for value in row])
    typer.echo(buffer.getvalue(), nl=False)


def flatten(document: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted.field, value)`` pairs of a nested document (list items by index)."""
    if isinstance(document, Mapping) and document:
        pairs: list[tuple[str, Any]] = []
        for key, value in document.items():
            pairs += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    if isinstance(document, list | tuple) and document:
        pairs = []
        for index, value in enumerate(document):
            pairs += flatten(value, f"{prefix}.{index}" if prefix else str(index))
        return pairs
    return [(prefix, document)]


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    justify: Sequence[str] | None = None,
    console: Console | None = None,
) -> None:
    """Print a table whole: as it is when it fits the terminal, else on its side.

    On its side, the headers run down the first column and each record is a
    column headed by its first cell, in as many blocks as needed; a header is
    never cut or wrapped.

    Args:
        headers: Column headings.
        rows: Cell texts (rich markup allowed), one sequence per record.
        title: The table title.
        justify: Per column ``left`` / ``right`` (default all left).
        console: Where to print (default a console on stdout).
    """
    console = console or Console()
    justify = list(justify or ["left"] * len(headers))
    table = Table(title=title)
    for header, side in zip(headers, justify, strict=True):
        table.add_column(header, justify=side, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    if not rows or _fits(console, table) or len(headers) < 2:
        console.print(table)
        return
    start = 0
    while start < len(rows):
        count = _records_that_fit(console, headers, rows, start)
        console.print(_side_table(headers, rows[start : start + count], title))
        start += count


def _fits(console: Console, table: Table) -> bool:
    """Whether ``table`` prints at its natural width, with no cell cut or wrapped."""
    from rich.measure import Measurement

    unlimited = console.options.update_width(1_000_000)
    return Measurement.get(console, unlimited, table).maximum <= console.width


def _side_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None) -> Table:
    table = Table(title=title)
    table.add_column(headers[0], no_wrap=True)
    for row in rows:
        table.add_column(row[0], overflow="fold")
    for index, header in enumerate(headers[1:], start=1):
        table.add_row(header, *(row[index] for row in rows))
    return table


def _records_that_fit(
    console: Console, headers: Sequence[str], rows: Sequence[Sequence[str]], start: int
) -> int:
    count = 1
    while start + count < len(rows):
        candidate = _side_table(headers, rows[start : start + count + 1], None)
        if not _fits(console, candidate):
            break
        count += 1
    return count


def print_records(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    output: str,
    *,
    title: str | None = None,
    empty: str | None = None,
) -> None:
    """Print records (one per listed resource) in the chosen format.

    Args:
        records: The records as the service returns them.
        columns: What a table and a CSV show.
        output: ``table``, ``json`` or ``csv``.
        title: The table title.
        empty: What a table prints instead when there are no records.
    """
    if output == "json":
        print_json(list(records))
    elif output == "csv":
        print_csv(
            [column.key for column in columns],
            ([record.get(column.key) for column in columns] for record in records),
        )
    elif not records and empty is not None:
        Console().print(empty, highlight=False)
    else:
        print_table(
            [column.header for column in columns],
            [[column.cell(record) for column in columns] for record in records],
            title=title,
            justify=[column.justify for column in columns],
        )


def print_document(
    document: Mapping[str, Any], output: str, table: Callable[[], None] | None = None
) -> None:
    """Print one description in the chosen format.

    Args:
        document: The description.
        output: ``table``, ``json`` or ``csv`` (``field,value`` rows, dotted fields).
        table: Renders the table form; default a ``field | value`` table.
    """
    if output == "json":
        print_json(document)
    elif output == "csv":
        print_csv(["field", "value"], flatten(document))
    elif table is not None:
        table()
    else:
        fields = Table()
        fields.add_column("field", no_wrap=True)
        fields.add_column("value", overflow="fold")
        for field, value in flatten(document):
            fields.add_row(field, "-" if value is None else _csv_value(value))
        Console().print(fields, highlight=False)


def hide_flag_types(command: Any) -> None:
    """Drop the ``<bool>`` type shown beside flags in ``--help``, for a command tree.

    A flag takes no value, so showing a type beside it misleads; Typer's rich
    help shows one unless the option has a metavar.
    """
    help_option = command.get_help_option(command.context_class(command))
    for param in [*command.params, help_option]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        hide_flag_types(subcommand)


_STATUS_STYLE = {
    "InProgress": "cyan",
    "Stopping": "yellow",
    "Completed": "green",
    "Stopped": "yellow",
    "Failed": "red",
}


def styled_status(status: str) -> str:
    """A SageMaker job status in its colour (Rich markup)."""
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def local_time(value: dt.datetime | None) -> str:
    """A timestamp in this machine's time zone, to the second; ``-`` for none."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"
