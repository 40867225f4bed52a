"""The ``script`` algorithm: the user's own training script, run unchanged.

The script follows SageMaker's script-mode contract: it reads ``SM_MODEL_DIR``,
``SM_CHANNEL_<NAME>``, ``SM_HOSTS`` … from the environment, receives its
hyperparameters as ``--name value`` arguments and prints its metrics in its own
format, which the job's ``metric_definitions`` (given by the user) pick up.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bcd.algorithms._base import Algorithm
from bcd.algorithms._hyperparameters import Hyperparameter, RawValue
from bcd.errors import InvalidInputError

#: Hyperparameters SageMaker reserves for itself (``sagemaker_program``, …); like
#: SageMaker's training toolkit, bcd does not pass them to the script.
RESERVED_PREFIX = "sagemaker_"

_HYPERPARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


class ScriptAlgorithm(Algorithm):
    """Runs a user's ``entry_point`` script from ``source_dir``."""

    name = "script"
    description = "your own training script under the SageMaker script-mode contract"

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        return ()

    @property
    def metric_definitions(self) -> list[dict[str, str]]:
        """Empty: a script's metric definitions come from the user."""
        return []

    def validate_hyperparameters(self, raw: Mapping[str, RawValue]) -> dict[str, Any]:
        """Check names and value types; values are passed through as strings.

        Raises:
            InvalidInputError: For a name that cannot be a ``--name`` flag, or a
                value that is not a string, number or boolean.
        """
        if not isinstance(raw, Mapping):
            raise InvalidInputError(
                f"hyperparameters must be a mapping of name to value, got {type(raw).__name__}"
            )
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not _HYPERPARAMETER_NAME.match(name):
                raise InvalidInputError(
                    f"hyperparameter name {name!r} cannot be passed as '--name value': "
                    "use letters, digits, '_', '-', '.' or ':', starting with a letter or '_'"
                )
            values[name] = _script_value(name, value)
        return values

    def command(self, hyperparameters: Mapping[str, Any], **options: Any) -> list[str]:
        """The argv running ``entry_point`` (see :func:`script_command`).

        Args:
            hyperparameters: Name to value, passed as ``--name value``.
            **options: ``entry_point`` (required) and ``source_dir``.

        Raises:
            InvalidInputError: For a missing or unknown option, or a bad path.
        """
        unknown = sorted(set(options) - {"entry_point", "source_dir"})
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) for algorithm 'script': {', '.join(unknown)}; "
                "valid ones: entry_point, source_dir"
            )
        if not options.get("entry_point"):
            raise InvalidInputError(
                "algorithm 'script' needs an entry_point (the script to run, e.g. 'train.py')"
            )
        return script_command(
            options["entry_point"], hyperparameters, source_dir=options.get("source_dir")
        )


def script_command(
    entry_point: str | Path,
    hyperparameters: Mapping[str, Any] | None = None,
    source_dir: str | Path | None = None,
) -> list[str]:
    """The argv that runs a user's script under the script-mode contract.

    Args:
        entry_point: The script, relative to ``source_dir`` when that is given.
        hyperparameters: Passed as ``--name value`` in the given order, except
            SageMaker's reserved ``sagemaker_*`` ones.
        source_dir: Folder holding the script (and whatever it imports). The
            engine runs the process with this folder on ``PYTHONPATH``.

    Returns:
        ``[sys.executable, "-u", "/abs/path/script.py", "--name", "value", ...]``
        (``-u`` so metrics reach the log as they are printed).

    Raises:
        InvalidInputError: If the script does not exist, is not a ``.py`` file,
            lies outside ``source_dir``, or a hyperparameter is invalid.
    """
    entry = Path(entry_point).expanduser()
    if source_dir is not None:
        root = Path(source_dir).expanduser().resolve()
        if not root.is_dir():
            raise InvalidInputError(f"source_dir {str(source_dir)!r} is not a folder")
        if entry.is_absolute():
            raise InvalidInputError(
                f"entry_point {str(entry_point)!r} must be relative to source_dir {str(root)!r}"
            )
        script = (root / entry).resolve()
        if not script.is_relative_to(root):
            raise InvalidInputError(
                f"entry_point {str(entry_point)!r} points outside source_dir {str(root)!r}"
            )
    else:
        script = entry.resolve()
    if script.suffix != ".py":
        raise InvalidInputError(
            f"entry_point {str(entry_point)!r} must be a Python file ending in .py"
        )
    if not script.is_file():
        raise InvalidInputError(f"entry_point script {str(script)!r} does not exist")
    values = SCRIPT.validate_hyperparameters(dict(hyperparameters or {}))
    argv = [sys.executable, "-u", str(script)]
    for name, value in values.items():
        if not name.startswith(RESERVED_PREFIX):
            argv += [f"--{name}", value]
    return argv


def validate_metric_definitions(
    definitions: Sequence[Mapping[str, str]] | None,
) -> list[dict[str, str]]:
    """Check user ``metric_definitions``: ``[{"Name": ..., "Regex": ...}]``.

    Args:
        definitions: The definitions as given (``None`` means none).

    Returns:
        The definitions as plain dicts.

    Raises:
        InvalidInputError: For a missing key, an empty or duplicate name, a
            regex that does not compile, or one without a capturing group.
    """
    if definitions is None:
        return []
    if isinstance(definitions, str | bytes) or not isinstance(definitions, Sequence):
        raise InvalidInputError("metric_definitions must be a list of {Name, Regex} objects")
    checked: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, definition in enumerate(definitions):
        if not isinstance(definition, Mapping) or set(definition) != {"Name", "Regex"}:
            raise InvalidInputError(
                f"metric_definitions[{index}] must have exactly the keys Name and Regex, "
                f"got {definition!r}"
            )
        name, regex = definition["Name"], definition["Regex"]
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"metric_definitions[{index}].Name must be non-empty text")
        if name in seen:
            raise InvalidInputError(f"metric name {name!r} is defined twice")
        if not isinstance(regex, str):
            raise InvalidInputError(f"metric {name!r}: Regex must be text")
        try:
            groups = re.compile(regex).groups
        except re.error as error:
            raise InvalidInputError(
                f"metric {name!r}: Regex {regex!r} is invalid: {error}"
            ) from None
        if groups < 1:
            raise InvalidInputError(
                f"metric {name!r}: Regex {regex!r} needs a capturing group around the value, "
                r"e.g. 'val_bac: ([0-9.]+)'"
            )
        seen.add(name)
        checked.append({"Name": name, "Regex": regex})
    return checked


def _script_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"hyperparameter {name}={value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return value
    raise InvalidInputError(
        f"hyperparameter {name}={value!r} must be a string, number or boolean, "
        f"not {type(value).__name__}"
    )


SCRIPT = ScriptAlgorithm()
