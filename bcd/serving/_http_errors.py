"""The one table from :mod:`bcd.errors` to HTTP statuses, and the JSON error body.

Every error answer is ``{"error": {"code": ..., "message": ...}}`` with a
stable ``code`` (the error class's ``code``). Bad input never yields a 500;
only unexpected exceptions do, with a generic message and a logged traceback.
"""

from __future__ import annotations

import json
import logging
import math

from bcd import errors

logger = logging.getLogger(__name__)

# The most specific class wins (looked up along the MRO).
HTTP_STATUS: dict[type[errors.BcdError], int] = {
    errors.InvalidInputError: 400,
    errors.UnsupportedMediaTypeError: 415,
    errors.PayloadTooLargeError: 413,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.AuthenticationError: 401,
    errors.PermissionDeniedError: 403,
    errors.NotReadyError: 503,
    errors.BcdTimeoutError: 504,
    errors.RateLimitedError: 429,
    errors.DependencyMissingError: 500,
    errors.JobFailedError: 500,
}

INTERNAL_ERROR_CODE = "internal_error"


def status_for(error: errors.BcdError) -> int:
    """The HTTP status of ``error`` (500 for classes with no entry)."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]  # type: ignore[index]
    return 500


def error_body(code: str, message: str) -> bytes:
    """The JSON error document."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_answer(error: errors.BcdError) -> tuple[int, bytes, dict[str, str]]:
    """The status, JSON body and extra headers that answer ``error``; logs it.

    Server-side failures (5xx) are logged as errors, refusals only at debug
    level, both without any request content.
    """
    status = status_for(error)
    if status >= 500:
        logger.error("request failed: %s: %s", error.code, error.message)
    else:
        logger.debug("request refused: %s", error.code)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return status, error_body(error.code, error.message), headers


def error_class_for(code: str) -> type[errors.BcdError]:
    """The error class whose ``code`` is ``code`` (``BcdError`` when none): for clients."""
    pending: list[type[errors.BcdError]] = [errors.BcdError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls
        pending.extend(cls.__subclasses__())
    return errors.BcdError
