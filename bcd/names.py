"""Validation of resource names (datasets, jobs, models, endpoints)."""

from __future__ import annotations

import re

from bcd.errors import InvalidInputError

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


def validate_name(name: str, kind: str = "name", max_length: int = 63) -> str:
    """Check a SageMaker-style resource name: 1–``max_length`` chars of ``[a-zA-Z0-9-]``.

    Args:
        name: The proposed name.
        kind: What is being named, for the error message ("training job name").
        max_length: 63 for most resources, 32 for tuning jobs.

    Returns:
        The name, unchanged.

    Raises:
        InvalidInputError: If the name is empty, too long, or has other characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{kind} must be a non-empty string")
    if len(name) > max_length:
        raise InvalidInputError(
            f"{kind} {name!r} is {len(name)} characters; the limit is {max_length}"
        )
    if not _NAME.match(name):
        raise InvalidInputError(
            f"{kind} {name!r} is invalid: use letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name
