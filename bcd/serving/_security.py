"""Request guards: API keys and the streamed body limit."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from bcd.config import Settings
from bcd.errors import (
    AuthenticationError,
    BcdError,
    BcdTimeoutError,
    InvalidInputError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from bcd.serving._deadlines import CancelAfter
from bcd.serving._source import BaseEndpointSource

# A verified key is trusted this long before the registry is asked again, so a
# revocation takes effect within this many seconds.
KEY_CACHE_SECONDS = 2.0


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


class KeyVerifier:
    """Checks API keys against the registry, caching answers for a few seconds.

    Only the SHA-256 of a key is kept in memory.

    Args:
        source: Checks keys (the registry).
        ttl_s: How long an answer is cached.
    """

    def __init__(self, source: BaseEndpointSource, ttl_s: float = KEY_CACHE_SECONDS) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, BcdError | None]] = {}

    async def verify(self, raw_key: str | None) -> None:
        """Accept a valid key.

        Raises:
            AuthenticationError: No key, or an unknown one.
            PermissionDeniedError: A revoked key.
        """
        if not raw_key:
            raise AuthenticationError(
                "this server needs an API key: send 'Authorization: Bearer KEY' or "
                "'X-API-Key: KEY' (create one with: bcd keys create)"
            )
        digest = hashlib.sha256(raw_key.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is None or cached[0] < now:
            outcome: BcdError | None = None
            try:
                await asyncio.to_thread(self._source.verify_api_key, raw_key)
            except (AuthenticationError, PermissionDeniedError) as error:
                outcome = error
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl_s, outcome)
            cached = (now + self._ttl_s, outcome)
        if cached[1] is not None:
            raise type(cached[1])(cached[1].message)


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
