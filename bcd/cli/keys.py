"""CLI commands: ``bcd keys create|list|revoke`` (API keys for ``bcd serve``)."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console

from bcd.cli._output import Column, JsonFlag, OutputOption, choose, print_records

console = Console()
keys_app = typer.Typer(help="API keys for the REST server (only a salted hash is stored).")


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@keys_app.command("create")
def create_key(
    name: str = typer.Option(..., "--name", help="What the key is for, e.g. pathology-app."),
    expires_days: float | None = typer.Option(
        None, "--expires-days", help="Lifetime in days (default: no expiry)."
    ),
) -> None:
    """Create a key and print it once; store it safely, it cannot be shown again."""
    from bcd.registry.keys import create_api_key

    created = create_api_key(name, expires_days)
    console.print(f"API key [bold]{created.info.key_id}[/] ({name}) — shown only once:")
    typer.echo(created.raw_key)
    console.print(
        "Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'; "
        f"revoke it with: bcd keys revoke {created.info.key_id}",
        highlight=False,
    )


_KEY_COLUMNS = (
    Column("key id", "KeyId"),
    Column("name", "Name"),
    Column("created (UTC)", "CreationTime", _when),
    Column("expires", "ExpiresAt", _when),
    Column("state", "State"),
)


@keys_app.command("list")
def list_keys(
    active_only: bool = typer.Option(False, "--active", help="Hide revoked keys."),
    output: OutputOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List keys (ids and names; secrets are never stored)."""
    from bcd.registry.keys import list_api_keys

    records = [
        {
            "KeyId": info.key_id,
            "Name": info.name,
            "CreationTime": info.created_at,
            "ExpiresAt": info.expires_at,
            "RevokedAt": info.revoked_at,
            "Active": info.active,
            "State": "revoked" if info.revoked_at else ("active" if info.active else "expired"),
        }
        for info in list_api_keys(include_revoked=not active_only)
    ]
    print_records(
        records,
        _KEY_COLUMNS,
        choose(output, as_json),
        empty="no API keys yet (bcd keys create --name NAME)",
    )


@keys_app.command("revoke")
def revoke_key(key_id: str = typer.Argument(..., help="The key id (see bcd keys list).")) -> None:
    """Revoke a key; servers refuse it within seconds."""
    from bcd.registry.keys import revoke_api_key

    revoke_api_key(key_id)
    console.print(f"revoked API key [bold]{key_id}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``keys`` to the root app."""
    app.add_typer(keys_app, name="keys")
