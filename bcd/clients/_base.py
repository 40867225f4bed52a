"""Shared plumbing of the low-level clients: settings and waiters."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bcd.config import Settings, get_settings
from bcd.errors import BcdTimeoutError, InvalidInputError, JobFailedError


class Waiter:
    """Polls a describe call until a terminal state, like a boto3 waiter.

    Args:
        describe: Called with the waiter's keyword arguments; returns a dict.
        status_key: The key holding the status in that dict.
        success: Statuses that end the wait successfully.
        failure: Statuses that end it with :class:`JobFailedError`.
    """

    def __init__(
        self,
        describe: Callable[..., dict[str, Any]],
        status_key: str,
        success: set[str],
        failure: set[str],
    ) -> None:
        self._describe = describe
        self._status_key = status_key
        self._success = success
        self._failure = failure

    def wait(self, WaiterConfig: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Block until done; ``WaiterConfig`` takes ``Delay`` (s) and ``MaxAttempts``.

        Raises:
            JobFailedError: The resource reached a failure status.
            BcdTimeoutError: ``MaxAttempts`` polls passed without a terminal status.
        """
        config = WaiterConfig or {}
        delay = float(config.get("Delay", 1.0))
        attempts = int(config.get("MaxAttempts", 1_000_000))
        for _ in range(attempts):
            description = self._describe(**kwargs)
            status = description.get(self._status_key)
            if status in self._success:
                return description
            if status in self._failure:
                reason = description.get("FailureReason") or "no reason recorded"
                raise JobFailedError(f"{status}: {reason}")
            time.sleep(delay)
        raise BcdTimeoutError(f"waiter gave up after {attempts} polls of {delay} s")


class BaseClient:
    """Holds the settings every service call runs with."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    def _waiters(self) -> dict[str, Waiter]:
        return {}

    def get_waiter(self, waiter_name: str) -> Waiter:
        """A waiter by its boto3 name, e.g. ``"training_job_completed_or_stopped"``.

        Raises:
            InvalidInputError: For an unknown name (the message lists the known ones).
        """
        waiters = self._waiters()
        if waiter_name not in waiters:
            known = ", ".join(sorted(waiters)) or "none"
            raise InvalidInputError(f"unknown waiter {waiter_name!r}; known waiters: {known}")
        return waiters[waiter_name]
