"""Hyperparameter specifications and their validation.

SageMaker passes every hyperparameter as a string; users of the Python APIs pass
numbers and booleans too. A :class:`Hyperparameter` parses either form into one
typed value, checks its range or choices, and formats it back to the string
given to the training process as ``--name value``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bcd.errors import InvalidInputError

RawValue = str | int | float | bool

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter: its type, default and allowed values.

    Attributes:
        name: SageMaker-style name, e.g. ``"mini_batch_size"``.
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"str"`` or ``"choice"``.
        default: The value used when the caller gives none (already typed).
        help: One line for tables and error messages.
        minimum: Smallest allowed number (inclusive), for ``int``/``float``.
        maximum: Largest allowed number (inclusive), for ``int``/``float``.
        exclusive_minimum: When true, ``minimum`` itself is not allowed.
        exclusive_maximum: When true, ``maximum`` itself is not allowed.
        choices: Allowed values of a ``choice`` (or of an ``int`` with a set).
        check: Extra parser for ``str`` values; returns the normalised string or
            raises ``ValueError`` with the reason.
    """

    name: str
    kind: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] = ()
    check: Callable[[str], str] | None = field(default=None, compare=False)

    def describe_range(self) -> str:
        """The allowed values in words, e.g. ``"int in [1, 4096]"``."""
        if self.choices:
            return f"one of {', '.join(str(choice) for choice in self.choices)}"
        if self.kind == "bool":
            return "true/false (or 1/0)"
        if self.kind in ("int", "float"):
            low = "(" if self.exclusive_minimum else "["
            minimum = "-inf" if self.minimum is None else _number(self.minimum)
            maximum = "inf" if self.maximum is None else _number(self.maximum)
            high = ")" if self.exclusive_maximum else "]"
            return f"{self.kind} in {low}{minimum}, {maximum}{high}"
        return "text"

    def parse(self, raw: RawValue) -> Any:
        """Turn ``raw`` into a typed, range-checked value.

        Args:
            raw: A string (as SageMaker passes it), number or boolean.

        Returns:
            The typed value.

        Raises:
            InvalidInputError: If ``raw`` has the wrong type or is out of range.
        """
        try:
            value = self._convert(raw)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(
                f"hyperparameter {self.name}={raw!r} is invalid: {error}; "
                f"expected {self.describe_range()} ({self.help})"
            ) from None
        self._check_range(value, raw)
        return value

    def format(self, value: Any) -> str:
        """The string form of a typed value, as passed on a command line."""
        if self.kind == "bool":
            return "1" if value else "0"
        if self.kind == "float":
            return repr(float(value))
        return str(value)

    def _convert(self, raw: RawValue) -> Any:
        if self.kind == "bool":
            return _parse_bool(raw)
        if isinstance(raw, bool):
            raise TypeError(f"a boolean is not a {self.kind}")
        if self.kind == "int":
            return _parse_int(raw)
        if self.kind == "float":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError("not a finite number")
            return value
        if not isinstance(raw, str):
            raise TypeError(f"expected text, got {type(raw).__name__}")
        text = raw.strip()
        if self.kind == "choice":
            text = text.lower()
        return self.check(text) if self.check else text

    def _check_range(self, value: Any, raw: RawValue) -> None:
        if self.choices and value not in self.choices:
            raise InvalidInputError(
                f"hyperparameter {self.name}={raw!r} is not allowed; "
                f"valid values: {', '.join(str(choice) for choice in self.choices)}"
            )
        if self.kind not in ("int", "float"):
            return
        too_low = self.minimum is not None and (
            value <= self.minimum if self.exclusive_minimum else value < self.minimum
        )
        too_high = self.maximum is not None and (
            value >= self.maximum if self.exclusive_maximum else value > self.maximum
        )
        if too_low or too_high:
            raise InvalidInputError(
                f"hyperparameter {self.name}={raw!r} is out of range; "
                f"expected {self.describe_range()} ({self.help})"
            )


def validate(
    raw: Mapping[str, RawValue], specs: Sequence[Hyperparameter], algorithm: str
) -> dict[str, Any]:
    """Parse ``raw`` against ``specs`` and fill in defaults.

    Args:
        raw: Hyperparameters as given by the caller (strings or numbers).
        specs: The hyperparameters the algorithm accepts.
        algorithm: The algorithm name, for error messages.

    Returns:
        Every hyperparameter of ``specs``, typed, in spec order.

    Raises:
        InvalidInputError: For an unknown name (listing the valid ones), a value
            of the wrong type, or a value out of range.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInputError(
            f"hyperparameters must be a mapping of name to value, got {type(raw).__name__}"
        )
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(str(name) for name in raw if name not in by_name)
    if unknown:
        raise InvalidInputError(
            f"unknown hyperparameter(s) for algorithm {algorithm!r}: {', '.join(unknown)}; "
            f"valid ones: {', '.join(sorted(by_name))}"
        )
    values: dict[str, Any] = {}
    for spec in specs:
        values[spec.name] = spec.parse(raw[spec.name]) if spec.name in raw else spec.default
    return values


def parse_image_shape(text: str) -> str:
    """Check an ``image_shape`` like ``"3,50,50"`` (channels, height, width).

    Raises:
        ValueError: If it is not three integers, 3 channels, sides in [16, 1024].
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError("expected three integers 'channels,height,width' such as '3,50,50'")
    channels, height, width = (int(part) for part in parts)
    if channels != 3:
        raise ValueError(f"H&E patches are RGB, so channels must be 3, not {channels}")
    if not (16 <= height <= 1024 and 16 <= width <= 1024):
        raise ValueError("height and width must be between 16 and 1024")
    return f"{channels},{height},{width}"


def image_shape_tuple(text: str) -> tuple[int, int, int]:
    """``"3,50,50"`` → ``(3, 50, 50)``."""
    channels, height, width = (int(part) for part in text.split(","))
    return channels, height, width


def parse_epoch_list(text: str) -> str:
    """Check ``lr_scheduler_step``: increasing positive epochs such as ``"10,20"``.

    Raises:
        ValueError: If an entry is not a positive integer or they do not increase.
    """
    if not text:
        return ""
    parts = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"\d+", part) and int(part) > 0 for part in parts):
        raise ValueError("expected comma-separated positive epochs such as '10,20'")
    epochs = [int(part) for part in parts]
    if epochs != sorted(set(epochs)):
        raise ValueError("epochs must be strictly increasing")
    return ",".join(str(epoch) for epoch in epochs)


def parse_class_weights(text: str) -> str:
    """Check ``class_weights``: ``balanced``, ``none`` or positive numbers ``"1,2"``.

    Raises:
        ValueError: For anything else.
    """
    lowered = text.lower()
    if lowered in ("balanced", "none"):
        return lowered
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            "expected 'balanced', 'none' or one positive weight per class such as '1,2'"
        ) from None
    if len(weights) < 2 or not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError("explicit class weights must be at least two positive numbers")
    return ",".join(repr(weight) for weight in weights)


def _parse_bool(raw: RawValue) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError("not a boolean")


def _parse_int(raw: RawValue) -> int:
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not raw.is_integer():
            raise ValueError("not a whole number")
        return int(raw)
    text = str(raw).strip()
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?\d+\.0*", text):
        return int(float(text))
    raise ValueError("not a whole number")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
