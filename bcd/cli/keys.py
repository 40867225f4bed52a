"""CLI commands: ``bcd keys create|list|revoke`` (API keys for ``bcd serve``)."""

from __future__ import annotations

import datetime as dt
import json

import typer
from rich.console import Console
from rich.table import Table

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


@keys_app.command("list")
def list_keys(
    active_only: bool = typer.Option(False, "--active", help="Hide revoked keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List keys (ids and names; secrets are never stored)."""
    from bcd.registry.keys import list_api_keys

    keys = list_api_keys(include_revoked=not active_only)
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {
                        "KeyId": info.key_id,
                        "Name": info.name,
                        "CreationTime": info.created_at.isoformat(),
                        "ExpiresAt": info.expires_at.isoformat() if info.expires_at else None,
                        "RevokedAt": info.revoked_at.isoformat() if info.revoked_at else None,
                        "Active": info.active,
                    }
                    for info in keys
                ]
            )
        )
        return
    if not keys:
        console.print("no API keys yet (bcd keys create --name NAME)")
        return
    table = Table("key id", "name", "created (UTC)", "expires", "state")
    for info in keys:
        state = "revoked" if info.revoked_at else ("active" if info.active else "expired")
        table.add_row(info.key_id, info.name, _when(info.created_at), _when(info.expires_at), state)
    console.print(table)


@keys_app.command("revoke")
def revoke_key(key_id: str = typer.Argument(..., help="The key id (see bcd keys list).")) -> None:
    """Revoke a key; servers refuse it within seconds."""
    from bcd.registry.keys import revoke_api_key

    revoke_api_key(key_id)
    console.print(f"revoked API key [bold]{key_id}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``keys`` to the root app."""
    app.add_typer(keys_app, name="keys")
