"""``multipart/form-data`` parsing for both upload routes, with one set of refusals.

``POST /predict-breast-cancer`` (and the invocations route) and ``POST
/slides`` parse forms with python-multipart's streaming parser. It refuses a
body in its own exceptions (``FormParserError`` for a boundary it cannot use,
``MultipartParseError`` for a malformed body: no boundary where one must be,
a part header name holding NUL bytes, LF-only line endings, …); here every
one of them, and a NUL byte in a part header's value, becomes
:class:`~bcd.errors.InvalidInputError` (400 ``invalid_input``), and a body
that ends before its closing boundary is refused too. Errors that the
callbacks raise (a part over its size limit, say) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bcd.errors import InvalidInputError

# RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
MAX_BOUNDARY_LENGTH = 70


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a ``multipart/form-data`` content type.

    Args:
        content_type: The whole ``Content-Type`` header value.

    Returns:
        The boundary, 1 to :data:`MAX_BOUNDARY_LENGTH` bytes.

    Raises:
        InvalidInputError: The parameter is missing, empty or too long.
    """
    from python_multipart.multipart import parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInputError(
            "multipart/form-data needs a boundary parameter in Content-Type, "
            "e.g. 'multipart/form-data; boundary=xyz'"
        )
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise InvalidInputError(
            f"the multipart boundary is {len(boundary)} characters long; RFC 2046 allows "
            f"1 to {MAX_BOUNDARY_LENGTH}"
        )
    return boundary


class MultipartStream:
    """A streaming multipart parser that refuses bad bodies with ``InvalidInputError``.

    Args:
        boundary: From :func:`boundary_of`.
        callbacks: python-multipart's ``MultipartParser`` callbacks
            (``on_part_begin``, ``on_header_field``, …); ``on_end`` is this
            class's own, to tell a complete body from a truncated one.

    Raises:
        InvalidInputError: The parser refuses the boundary.
    """

    def __init__(self, boundary: bytes, callbacks: dict[str, Callable[..., Any]]) -> None:
        from python_multipart.exceptions import FormParserError
        from python_multipart.multipart import MultipartParser

        self._errors = FormParserError
        self.ended = False
        self._on_header_value = callbacks.get("on_header_value")
        try:
            # Any: python-multipart types the callbacks as a TypedDict of literal keys.
            everything: Any = {
                **callbacks,
                "on_header_value": self._header_value,
                "on_end": self._end,
            }
            self._parser = MultipartParser(boundary, everything)
        except FormParserError as error:
            raise InvalidInputError(f"the multipart boundary cannot be used: {error}") from error

    def _end(self) -> None:
        self.ended = True

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        # The parser checks header names only; RFC 9110 forbids NUL in values too.
        if b"\0" in data[start:end]:
            raise InvalidInputError("a multipart part header holds a NUL byte")
        if self._on_header_value is not None:
            self._on_header_value(data, start, end)

    def write(self, chunk: bytes) -> None:
        """Parse the next piece of the body.

        Raises:
            InvalidInputError: The body is malformed.
        """
        try:
            self._parser.write(chunk)
        except self._errors as error:
            raise InvalidInputError(f"the multipart body could not be parsed: {error}") from error

    def finish(self) -> None:
        """The body is over: check that it was complete.

        Raises:
            InvalidInputError: The body is malformed or ends before its closing boundary.
        """
        try:
            self._parser.finalize()
        except self._errors as error:
            raise InvalidInputError(f"the multipart body could not be parsed: {error}") from error
        if not self.ended:
            raise InvalidInputError(
                "the multipart body is incomplete: its closing boundary is missing"
            )
