"""Lookups shared by the registry services: ARNs and not-found messages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from bcd.errors import NotFoundError

_MAX_LISTED = 20


def arn(kind: str, name: str) -> str:
    """A SageMaker-style ARN for a local resource, e.g. ``arn:bcd:sagemaker:local:model/m``."""
    return f"arn:bcd:sagemaker:local:{kind}/{name}"


def not_found(kind: str, name: str, existing: Iterable[str], hint: str) -> NotFoundError:
    """A NotFoundError naming what does exist, so the user can pick the right one.

    Args:
        kind: What was looked up ("model", "endpoint config", "endpoint").
        name: The name asked for.
        existing: Names that do exist.
        hint: The command that creates one, e.g. ``"bcd models create"``.
    """
    names = sorted(existing)
    if not names:
        return NotFoundError(
            f"no {kind} named {name!r}; there are none yet (create one with {hint})"
        )
    listed = ", ".join(names[:_MAX_LISTED])
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return NotFoundError(f"no {kind} named {name!r}; existing: {listed}{more}")


def aware(moment: dt.datetime | None) -> dt.datetime | None:
    """A stored time as timezone-aware UTC (SQLite hands back naive datetimes)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)
