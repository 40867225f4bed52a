"""API keys: created once, shown once, stored only as a salted scrypt hash.

A raw key reads ``bcd_<key id>_<secret>``: the key id (16 hex characters) is
public and finds the record; the secret (256 random bits) is hashed with
scrypt and a per-key salt. The database never holds a raw key.

Verification is cached in memory for :data:`CACHE_TTL_S` seconds per key (the
cache holds a SHA-256 of the raw key, not the key), so a server pays the
scrypt cost once per key rather than on every request; a revocation takes
effect within that many seconds. A well-formed key with an unknown id costs
one scrypt too (against a dummy hash), so the time of an answer does not tell
a guesser which key ids exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bcd.config import Settings, get_settings
from bcd.db import session_scope, utcnow
from bcd.errors import AuthenticationError, InvalidInputError, PermissionDeniedError
from bcd.names import validate_name
from bcd.registry._lookup import aware, not_found
from bcd.registry._tables import ApiKeyRecord

__all__ = [
    "CACHE_TTL_S",
    "CreatedApiKey",
    "KeyInfo",
    "create_api_key",
    "has_active_api_keys",
    "key_id_of",
    "list_api_keys",
    "revoke_api_key",
    "verify_api_key",
]

logger = logging.getLogger(__name__)

CACHE_TTL_S = 2.0
_PREFIX = "bcd"
_KEY = re.compile(r"^bcd_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_ALGORITHM = "scrypt:n=16384,r=8,p=1"
_cache: dict[tuple[str, str], tuple[bytes, float, KeyInfo]] = {}
_cache_lock = threading.Lock()
# What an unknown key id's secret is hashed against: as costly as a real key's check.
_DUMMY_SALT = bytes(16)
_DUMMY_HASH = bytes(32)


@dataclass(frozen=True)
class KeyInfo:
    """A key's public record (never its secret).

    Attributes:
        key_id: The public id inside the raw key; ``bcd keys revoke`` takes it.
        name: What the key is for ("pathology-app").
        created_at: When it was created (UTC).
        expires_at: When it stops working, or ``None``.
        revoked_at: When it was revoked, or ``None``.
    """

    key_id: str
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        """Not revoked and not expired."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key: ``raw_key`` is shown to the user once and never stored."""

    raw_key: str
    info: KeyInfo


def _info(record: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(
        record.key_id,
        record.name,
        aware(record.created_at),  # type: ignore[arg-type]
        aware(record.expires_at),
        aware(record.revoked_at),
    )


def key_id_of(raw_key: Any) -> str | None:
    """The public key id inside a raw key, or ``None`` when it is not a well-formed key."""
    match = _KEY.match(raw_key) if isinstance(raw_key, str) else None
    return match.group(1) if match else None


def _derive(secret: str, salt: bytes, algorithm: str) -> bytes:
    if algorithm != _ALGORITHM:
        raise AuthenticationError("this API key was hashed by an unknown scheme; create a new key")
    return hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)


def create_api_key(
    name: str, expires_in_days: float | None = None, settings: Settings | None = None
) -> CreatedApiKey:
    """Create an API key.

    Args:
        name: What the key is for (1–63 chars of ``[a-zA-Z0-9-]``).
        expires_in_days: Lifetime in days; ``None`` for no expiry.
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        The raw key (show it once; it cannot be recovered) and its record.

    Raises:
        InvalidInputError: Bad name or a non-positive lifetime.
    """
    validate_name(name, "API key name")
    expires_at = None
    if expires_in_days is not None:
        if not isinstance(expires_in_days, int | float) or not expires_in_days > 0:
            raise InvalidInputError(
                f"expires_in_days must be a positive number, not {expires_in_days!r}"
            )
        expires_at = utcnow() + dt.timedelta(days=float(expires_in_days))
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    record = ApiKeyRecord(
        key_id=key_id,
        name=name,
        algorithm=_ALGORITHM,
        salt_hex=salt.hex(),
        hash_hex=_derive(secret, salt, _ALGORITHM).hex(),
        created_at=utcnow(),
        expires_at=expires_at,
    )
    with session_scope(settings) as session:
        session.add(record)
    logger.info("created API key %s (%s)", key_id, name)
    return CreatedApiKey(f"{_PREFIX}_{key_id}_{secret}", _info(record))


def list_api_keys(include_revoked: bool = True, settings: Settings | None = None) -> list[KeyInfo]:
    """Every key's public record, oldest first."""
    with session_scope(settings) as session:
        query = select(ApiKeyRecord).order_by(ApiKeyRecord.created_at, ApiKeyRecord.key_id)
        if not include_revoked:
            query = query.where(ApiKeyRecord.revoked_at.is_(None))
        return [_info(record) for record in session.scalars(query)]


def has_active_api_keys(settings: Settings | None = None) -> bool:
    """Whether any key is neither revoked nor expired."""
    return any(info.active for info in list_api_keys(include_revoked=False, settings=settings))


def revoke_api_key(key_id: str, settings: Settings | None = None) -> KeyInfo:
    """Revoke a key by its id (revoking twice keeps the first time).

    Raises:
        NotFoundError: No key with that id (the message lists the existing ids).
    """
    settings = settings or get_settings()
    with session_scope(settings) as session:
        record = session.get(ApiKeyRecord, key_id)
        if record is None:
            existing = session.scalars(select(ApiKeyRecord.key_id)).all()
            raise not_found("API key", key_id, existing, "bcd keys create")
        if record.revoked_at is None:
            record.revoked_at = utcnow()
        info = _info(record)
    with _cache_lock:
        _cache.pop((settings.resolved_database_url, key_id), None)
    logger.info("revoked API key %s", key_id)
    return info


def _check_state(info: KeyInfo) -> KeyInfo:
    if info.revoked_at is not None:
        raise PermissionDeniedError(
            f"API key {info.key_id} was revoked; ask an administrator for a new key"
        )
    if info.expires_at is not None and info.expires_at <= utcnow():
        raise PermissionDeniedError(
            f"API key {info.key_id} expired; ask an administrator for a new key"
        )
    return info


def verify_api_key(raw_key: Any, settings: Settings | None = None) -> KeyInfo:
    """Check a raw key from a request (constant-time comparison of hashes).

    Args:
        raw_key: What the client sent (``Authorization: Bearer …`` or ``X-API-Key``).
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        The key's public record.

    Raises:
        AuthenticationError: Missing, malformed or unknown key, or a wrong secret.
        PermissionDeniedError: The key was revoked or has expired.
    """
    settings = settings or get_settings()
    match = _KEY.match(raw_key) if isinstance(raw_key, str) else None
    if match is None:
        raise AuthenticationError(
            "missing or malformed API key; send 'Authorization: Bearer bcd_…' or 'X-API-Key'"
        )
    key_id, secret = match.groups()
    fingerprint = hashlib.sha256(raw_key.encode()).digest()
    cache_key = (settings.resolved_database_url, key_id)
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(cache_key)
    if cached and cached[1] > now and hmac.compare_digest(cached[0], fingerprint):
        return _check_state(cached[2])
    with session_scope(settings) as session:
        record = session.get(ApiKeyRecord, key_id)
        info = _info(record) if record is not None else None
        if record is None:
            salt, stored, algorithm = _DUMMY_SALT, _DUMMY_HASH, _ALGORITHM
        else:
            salt, stored = bytes.fromhex(record.salt_hex), bytes.fromhex(record.hash_hex)
            algorithm = record.algorithm
    matches = hmac.compare_digest(_derive(secret, salt, algorithm), stored)
    if info is None or not matches:
        raise AuthenticationError("unknown API key; check it, or create one (bcd keys create)")
    with _cache_lock:
        _cache[cache_key] = (fingerprint, now + CACHE_TTL_S, info)
    return _check_state(info)
