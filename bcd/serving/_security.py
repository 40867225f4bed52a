"""Request guards: API keys (with a limit on failed checks) and the streamed body limit."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from bcd.config import Settings
from bcd.errors import (
    AuthenticationError,
    BcdError,
    BcdTimeoutError,
    InvalidInputError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
)
from bcd.serving._deadlines import CancelAfter
from bcd.serving._source import BaseEndpointSource

# A verified key is trusted this long before the registry is asked again, so a
# revocation takes effect within this many seconds.
KEY_CACHE_SECONDS = 2.0
# Memory bounds: keys whose answers are cached, keys known to be valid,
# subjects (key ids, client addresses) whose failures are counted.
_MAX_CACHED_KEYS = 10_000
_MAX_SUBJECTS = 50_000


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def keys_required(settings: Settings) -> bool:
    """API keys are required off loopback, unless ``require_api_key`` says otherwise."""
    if settings.require_api_key is not None:
        return settings.require_api_key
    return not is_loopback(settings.host)


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The raw key from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class FailureLimiter:
    """Counts failures per subject in a sliding window and refuses subjects over the limit.

    Thread-safe. Memory is bounded: past ``max_subjects`` subjects, the
    oldest are forgotten first.

    Args:
        limit: Failures allowed within ``window_s`` (the next attempt is refused).
        window_s: Length of the window in seconds.
        clock: Monotonic clock (tests pass their own).
        max_subjects: Subjects tracked at most.
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_subjects: int = _MAX_SUBJECTS,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_subjects = max_subjects
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, subjects: Iterable[str]) -> float | None:
        """Seconds until the most limited of ``subjects`` may try again; ``None`` if none is."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for subject in subjects:
                times = self._failures.get(subject)
                if times is None:
                    continue
                self._expire(times, now)
                if len(times) >= self.limit:
                    wait = max(wait, times[0] + self.window_s - now)
                elif not times:
                    del self._failures[subject]
        return wait if wait > 0 else None

    def record(self, subjects: Iterable[str]) -> None:
        """Count one failure for each of ``subjects``."""
        now = self._clock()
        with self._lock:
            for subject in subjects:
                times = self._failures.pop(subject, None)
                if times is None:
                    times = deque(maxlen=self.limit)
                self._expire(times, now)
                times.append(now)
                self._failures[subject] = times  # re-inserted: the newest subject last
            while len(self._failures) > self._max_subjects:
                del self._failures[next(iter(self._failures))]

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_s:
            times.popleft()


def _subjects(raw_key: str, client: str | None) -> list[str]:
    """What failed checks are counted against: the key id (when well formed) and the client."""
    from bcd.registry.keys import key_id_of

    subjects = []
    key_id = key_id_of(raw_key)
    if key_id is not None:
        subjects.append(f"key:{key_id}")
    if client:
        subjects.append(f"client:{client}")
    return subjects


class KeyVerifier:
    """Checks API keys against the registry, caching answers for a few seconds.

    Only the SHA-256 of a key is kept in memory. Failed checks (an unknown key
    or a wrong secret) are counted per key id and per client address; past
    ``failure_limit`` within ``failure_window_s`` that key id or client is
    refused with :class:`~bcd.errors.RateLimitedError` (HTTP 429) before any
    hashing, until the oldest failure leaves the window. A key that has been
    valid on this server is never refused that way, so guesses at a key id do
    not lock out its owner.

    Args:
        source: Checks keys (the registry).
        ttl_s: How long an answer is cached.
        failure_limit: Failed checks allowed per key id and per client in the window.
        failure_window_s: The window, in seconds.
        clock: Monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        source: BaseEndpointSource,
        ttl_s: float = KEY_CACHE_SECONDS,
        *,
        failure_limit: int = 10,
        failure_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, BcdError | None]] = {}
        self._valid: dict[str, None] = {}  # digests of keys that were valid here
        self.failures = FailureLimiter(failure_limit, failure_window_s, clock=clock)

    async def verify(self, raw_key: str | None, client: str | None = None) -> None:
        """Accept a valid key.

        Args:
            raw_key: The key the request sent (``None``: none).
            client: The client's address, for the limit on failed checks.

        Raises:
            AuthenticationError: No key, or an unknown one.
            PermissionDeniedError: A revoked key.
            RateLimitedError: Too many failed checks for this key id or client.
        """
        if not raw_key:
            raise AuthenticationError(
                "this server needs an API key: send 'Authorization: Bearer KEY' or "
                "'X-API-Key: KEY' (create one with: bcd keys create)"
            )
        digest = hashlib.sha256(raw_key.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] >= now and cached[1] is None:
            return  # the common case: a key verified moments ago
        subjects = _subjects(raw_key, client)
        if digest not in self._valid:
            self._refuse_if_limited(subjects)
        if cached is None or cached[0] < now:
            outcome: BcdError | None = None
            try:
                await asyncio.to_thread(self._source.verify_api_key, raw_key)
            except (AuthenticationError, PermissionDeniedError) as error:
                outcome = error
            with self._lock:
                if len(self._cache) > _MAX_CACHED_KEYS:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl_s, outcome)
                if outcome is None:
                    if len(self._valid) > _MAX_CACHED_KEYS:
                        self._valid.clear()
                    self._valid[digest] = None
            cached = (now + self._ttl_s, outcome)
        if cached[1] is not None:
            if isinstance(cached[1], AuthenticationError):
                self.failures.record(subjects)
            raise type(cached[1])(cached[1].message)

    def _refuse_if_limited(self, subjects: list[str]) -> None:
        wait = self.failures.retry_after(subjects)
        if wait is not None:
            raise RateLimitedError(
                f"too many failed API-key checks from this client or for this key id; "
                f"retry in {max(1, math.ceil(wait))} s with a valid key",
                retry_after_s=wait,
            )


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is over the {limit}-byte limit; send fewer or smaller images"
    )


def _check_declared(content_length: str | None, limit: int) -> None:
    """Refuse a body whose declared length is over ``limit`` before reading it."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = 0
        if declared > limit:
            raise _too_large(limit)


def _disconnected() -> InvalidInputError:
    return InvalidInputError("the client disconnected before sending the whole body")


def _too_slow(settings: Settings) -> BcdTimeoutError:
    return BcdTimeoutError(f"the request body did not arrive within {settings.request_timeout_s} s")


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int
) -> bytes:
    """Read a request body, refusing it as soon as it passes ``limit`` bytes.

    Raises:
        PayloadTooLargeError: The declared or actual length is over ``limit``.
    """
    _check_declared(content_length, limit)
    parts: list[bytes] = []
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, settings: Settings
) -> bytes:
    """Read a scoring request's body within ``max_body_bytes`` and ``request_timeout_s``.

    ``chunks`` raises Starlette's ``ClientDisconnect`` when the client goes away
    (as ``Request.stream()`` does), so both scoring paths refuse alike.

    Raises:
        PayloadTooLargeError: The body is over the limit.
        BcdTimeoutError: The client took longer than the request timeout to send it.
        InvalidInputError: The client disconnected before sending the whole body.
    """
    from starlette.requests import ClientDisconnect

    try:
        async with CancelAfter(settings.request_timeout_s):
            return await read_limited(chunks, content_length, settings.max_body_bytes)
    except ClientDisconnect as error:
        raise _disconnected() from error
    except TimeoutError as error:
        raise _too_slow(settings) from error


async def read_asgi_body(
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    content_length: str | None,
    settings: Settings,
) -> bytes:
    """:func:`read_body` straight from an ASGI ``receive`` (the lean scoring path).

    Same limits, timeout and errors, without an async generator per request.
    """
    limit = settings.max_body_bytes
    _check_declared(content_length, limit)
    parts: list[bytes] = []
    received = 0
    try:
        async with CancelAfter(settings.request_timeout_s):
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "http.disconnect":
                    raise _disconnected()
                if kind != "http.request":
                    continue
                chunk = message.get("body", b"")
                if chunk:
                    received += len(chunk)
                    if received > limit:
                        raise _too_large(limit)
                    parts.append(chunk)
                if not message.get("more_body", False):
                    return parts[0] if len(parts) == 1 else b"".join(parts)
    except TimeoutError as error:
        raise _too_slow(settings) from error
