"""API keys: shown once, stored as a salted hash, verified, revoked, expired."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bcd import db
from bcd.config import Settings
from bcd.errors import AuthenticationError, InvalidInputError, NotFoundError, PermissionDeniedError
from bcd.registry import keys
from bcd.registry._tables import ApiKeyRecord


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """Every test of this module runs on a SQLite and on a PostgreSQL store."""
    return store_settings


def test_created_key_verifies(settings: Settings) -> None:
    created = keys.create_api_key("pathology-app", settings=settings)
    assert created.raw_key.startswith(f"bcd_{created.info.key_id}_")
    info = keys.verify_api_key(created.raw_key, settings=settings)
    assert (info.key_id, info.name, info.active) == (created.info.key_id, "pathology-app", True)
    assert keys.has_active_api_keys(settings=settings)


def test_database_never_holds_the_raw_key(settings: Settings, bcd_home: Path) -> None:
    created = keys.create_api_key("app", settings=settings)
    secret = created.raw_key.split("_", 2)[2]  # the secret itself may hold "_"
    with db.session_scope(settings) as session:
        record = session.get(ApiKeyRecord, created.info.key_id)
        stored = " ".join(
            str(getattr(record, column.name)) for column in ApiKeyRecord.__table__.columns
        )
    assert secret not in stored and created.raw_key not in stored
    assert len(bytes.fromhex(record.salt_hex)) == 16
    db.dispose_engines()  # flush the WAL so the file holds everything
    for path in bcd_home.glob("bcd.db*"):
        assert secret.encode() not in path.read_bytes()


def test_two_keys_get_different_salts(settings: Settings) -> None:
    first = keys.create_api_key("a", settings=settings).info.key_id
    second = keys.create_api_key("b", settings=settings).info.key_id
    with db.session_scope(settings) as session:
        salts = {session.get(ApiKeyRecord, key_id).salt_hex for key_id in (first, second)}
    assert len(salts) == 2


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("Bearer something", id="garbage"),
        pytest.param("bcd_nothex_" + "a" * 43, id="bad-id"),
        pytest.param("bcd_0123456789abcdef_short", id="short-secret"),
        pytest.param(b"bcd_0123456789abcdef_" + b"a" * 43, id="bytes"),
    ],
)
def test_malformed_keys_are_unauthenticated(settings: Settings, raw: object) -> None:
    with pytest.raises(AuthenticationError, match="malformed"):
        keys.verify_api_key(raw, settings=settings)


def test_unknown_id_and_wrong_secret_are_unauthenticated(settings: Settings) -> None:
    created = keys.create_api_key("app", settings=settings)
    with pytest.raises(AuthenticationError, match="unknown API key"):
        keys.verify_api_key("bcd_0123456789abcdef_" + "a" * 43, settings=settings)
    _, key_id, secret = created.raw_key.split("_", 2)
    forged = f"bcd_{key_id}_{'b' if secret[0] != 'b' else 'c'}{secret[1:]}"
    with pytest.raises(AuthenticationError, match="unknown API key"):
        keys.verify_api_key(forged, settings=settings)
    keys.verify_api_key(created.raw_key, settings=settings)  # cached now
    with pytest.raises(AuthenticationError, match="unknown API key"):
        keys.verify_api_key(forged, settings=settings)  # the cache does not let it through


def test_revoked_key_is_denied_at_once_in_this_process(settings: Settings) -> None:
    created = keys.create_api_key("app", settings=settings)
    keys.verify_api_key(created.raw_key, settings=settings)
    info = keys.revoke_api_key(created.info.key_id, settings=settings)
    assert info.revoked_at is not None and not info.active
    with pytest.raises(PermissionDeniedError, match="revoked"):
        keys.verify_api_key(created.raw_key, settings=settings)
    again = keys.revoke_api_key(created.info.key_id, settings=settings)
    assert again.revoked_at == info.revoked_at
    assert not keys.has_active_api_keys(settings=settings)


def test_revocation_by_another_process_applies_after_the_cache_ttl(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = keys.create_api_key("app", settings=settings)
    keys.verify_api_key(created.raw_key, settings=settings)
    with db.session_scope(settings) as session:  # what `bcd keys revoke` does elsewhere
        session.get(ApiKeyRecord, created.info.key_id).revoked_at = db.utcnow()
    monkeypatch.setattr(keys.time, "monotonic", lambda: 1e12)
    with pytest.raises(PermissionDeniedError):
        keys.verify_api_key(created.raw_key, settings=settings)


def test_expired_key_is_denied(settings: Settings) -> None:
    created = keys.create_api_key("app", expires_in_days=1, settings=settings)
    with db.session_scope(settings) as session:
        record = session.get(ApiKeyRecord, created.info.key_id)
        record.expires_at = db.utcnow() - dt.timedelta(seconds=1)
    with pytest.raises(PermissionDeniedError, match="expired"):
        keys.verify_api_key(created.raw_key, settings=settings)


def test_list_and_revoke_unknown(settings: Settings) -> None:
    first = keys.create_api_key("a", settings=settings).info
    second = keys.create_api_key("b", expires_in_days=30, settings=settings).info
    keys.revoke_api_key(first.key_id, settings=settings)
    listed = keys.list_api_keys(settings=settings)
    assert {info.key_id for info in listed} == {first.key_id, second.key_id}
    assert [info.key_id for info in keys.list_api_keys(False, settings)] == [second.key_id]
    assert second.expires_at is not None and second.expires_at > db.utcnow()
    with pytest.raises(NotFoundError, match="no API key named 'nope'; existing:"):
        keys.revoke_api_key("nope", settings=settings)


@pytest.mark.parametrize(("name", "days"), [("bad name", None), ("ok", 0), ("ok", -3)])
def test_bad_create_input(settings: Settings, name: str, days: float | None) -> None:
    with pytest.raises(InvalidInputError):
        keys.create_api_key(name, expires_in_days=days, settings=settings)


def test_unknown_key_ids_cost_the_same_hashing_as_wrong_secrets(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = keys.create_api_key("app", settings=settings)
    _, key_id, secret = created.raw_key.split("_", 2)
    calls: list[int] = []
    real_scrypt = keys.hashlib.scrypt

    def counting_scrypt(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        return real_scrypt(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(keys.hashlib, "scrypt", counting_scrypt)
    unknown = "bcd_0123456789abcdef_" + secret
    wrong = f"bcd_{key_id}_{'b' if secret[0] != 'b' else 'c'}{secret[1:]}"
    costs = {}
    for label, raw_key in (("unknown", unknown), ("wrong secret", wrong)):
        before = len(calls)
        with pytest.raises(AuthenticationError, match="unknown API key"):
            keys.verify_api_key(raw_key, settings=settings)
        costs[label] = len(calls) - before
    assert costs == {"unknown": 1, "wrong secret": 1}
    # The successful path: one scrypt, then the cache.
    before = len(calls)
    for _ in range(3):
        keys.verify_api_key(created.raw_key, settings=settings)
    assert len(calls) - before == 1


def test_key_id_of_reads_only_well_formed_keys() -> None:
    assert keys.key_id_of("bcd_0123456789abcdef_" + "a" * 43) == "0123456789abcdef"
    assert keys.key_id_of("bcd_0123456789abcdef_short") is None
    assert keys.key_id_of(None) is None
