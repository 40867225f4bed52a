"""The one error hierarchy of bcd.

Every error a user can cause or act on derives from :class:`BcdError`. Each class
carries a stable machine-readable ``code``; the CLI maps classes to exit codes
(:mod:`bcd.cli.main`) and the REST server maps them to HTTP statuses
(:mod:`bcd.serving`), each in one table.
"""

from __future__ import annotations


class BcdError(Exception):
    """Base of all bcd errors.

    Args:
        message: What was wrong and what to do about it, for a human.
    """

    code = "bcd_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(BcdError):
    """The caller's input is malformed, out of range or inconsistent."""

    code = "invalid_input"


class NotFoundError(BcdError):
    """A named resource (dataset, job, model, endpoint, …) does not exist."""

    code = "not_found"


class UnknownVariantError(NotFoundError):
    """A request pinned a production variant the endpoint does not have."""

    code = "unknown_variant"


class ConflictError(BcdError):
    """A resource with that name exists already, or its state forbids the action."""

    code = "conflict"


class ArtifactIntegrityError(ConflictError):
    """A model file's SHA-256 differs from the one recorded when it was registered."""

    code = "integrity_mismatch"

    @classmethod
    def mismatch(
        cls, path: object, expected: str, actual: str, model_name: str | None = None
    ) -> ArtifactIntegrityError:
        """The error for ``path`` hashing to ``actual`` instead of ``expected``."""
        since = f"model {model_name!r} was created" if model_name else "it was registered"
        return cls(
            f"{path} changed since {since}: expected SHA-256 {expected}, found {actual}; "
            "restore the original file, or register the new one as a new model "
            "(bcd models create) and update the endpoint to it"
        )


class ExplanationsUnavailableError(ConflictError):
    """A Grad-CAM explanation cannot be made (no torch, or no torch model ``model.pt``)."""

    code = "explanations_unavailable"


class UnsupportedMediaTypeError(InvalidInputError):
    """A request body's content type is not one bcd accepts."""

    code = "unsupported_media_type"


class PayloadTooLargeError(InvalidInputError):
    """A request body or an image is over the configured limit."""

    code = "payload_too_large"


class InvalidArchiveError(InvalidInputError):
    """An uploaded archive is not a readable zip of one DICOM whole-slide series."""

    code = "invalid_archive"


class UnsafeArchiveError(InvalidArchiveError):
    """An archive entry would land outside its folder (absolute, ``..``) or is a link."""

    code = "unsafe_archive"


class ArchiveTooLargeError(PayloadTooLargeError):
    """An archive has more entries, or unpacks to more bytes, than the configured limits."""

    code = "archive_too_large"


class AuthenticationError(BcdError):
    """No API key, or an unknown one."""

    code = "unauthenticated"


class PermissionDeniedError(BcdError):
    """A valid API key that may not do this (revoked, wrong scope)."""

    code = "permission_denied"


class NotReadyError(BcdError):
    """A service or endpoint is not ready to answer yet."""

    code = "not_ready"


class DependencyMissingError(BcdError):
    """An optional dependency (torch, openslide, s3fs, …) is not installed."""

    code = "dependency_missing"


class JobFailedError(BcdError):
    """A training or tuning job ended ``Failed``; the message holds its FailureReason."""

    code = "job_failed"


class BcdTimeoutError(BcdError):
    """An operation (waiter, request) did not finish in time."""

    code = "timeout"


class RateLimitedError(BcdError):
    """Too many attempts (failed API-key checks) in a short time; retry later.

    Args:
        message: What was refused and when to retry.
        retry_after_s: Seconds until a retry can succeed (the ``Retry-After`` header).
    """

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def require(module: str, extra: str) -> None:
    """Fail with a clear message when an optional dependency is missing.

    Args:
        module: Importable module name, e.g. ``"torch"``.
        extra: The ``pip install 'bcd[EXTRA]'`` extra that brings it.

    Raises:
        DependencyMissingError: When ``module`` cannot be imported.
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise DependencyMissingError(
            f"{module!r} is not installed; install it with: pip install 'bcd[{extra}]'"
        )
