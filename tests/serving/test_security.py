"""Failed API-key checks are limited per key id and per client address (429 + Retry-After)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bcd.config import Settings
from bcd.errors import AuthenticationError, PermissionDeniedError, RateLimitedError
from bcd.serving import InMemoryEndpointSource
from bcd.serving._security import FailureLimiter, KeyVerifier
from tests.serving.conftest import png_bytes

VALID = "bcd_0123456789abcdef_" + "v" * 43
OTHER_ID = "bcd_fedcba9876543210_"


def _guess(key_id: str = "0123456789abcdef", index: int = 0) -> str:
    return f"bcd_{key_id}_{index:043d}"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _CountingSource(InMemoryEndpointSource):
    """An in-memory source that counts the key checks that reach it (the costly part)."""

    def __init__(self, api_keys: list[str]) -> None:
        super().__init__(api_keys=api_keys)
        self.checks = 0

    def verify_api_key(self, raw_key: str) -> None:
        self.checks += 1
        super().verify_api_key(raw_key)


def _verify(verifier: KeyVerifier, raw_key: str, client: str) -> type[Exception] | None:
    try:
        asyncio.run(verifier.verify(raw_key, client))
    except (AuthenticationError, PermissionDeniedError, RateLimitedError) as error:
        return type(error)
    return None


def test_guesses_at_one_key_id_are_refused_without_checking_once_over_the_limit() -> None:
    source, clock = _CountingSource([VALID]), _Clock()
    verifier = KeyVerifier(source, failure_limit=3, failure_window_s=60, clock=clock)
    assert _verify(verifier, VALID, "10.0.0.1") is None  # its owner uses it
    clock.now += 5  # past the cache of that answer
    outcomes = [_verify(verifier, _guess(index=i), f"10.0.0.{i}") for i in range(5)]
    assert outcomes == [AuthenticationError] * 3 + [RateLimitedError] * 2
    assert source.checks == 1 + 3  # the refused guesses cost no hashing
    with pytest.raises(RateLimitedError) as refused:
        asyncio.run(verifier.verify(_guess(index=9), "10.0.0.9"))
    assert refused.value.retry_after_s == pytest.approx(60)
    # A key that was valid here is not locked out by guesses at its id.
    assert _verify(verifier, VALID, "10.0.0.1") is None
    # Another key id from a fresh client is still checked.
    assert _verify(verifier, _guess("fedcba9876543210"), "10.0.0.50") is AuthenticationError
    # Once the oldest failure leaves the window, the key id may be tried again.
    clock.now += 61
    assert _verify(verifier, _guess(index=10), "10.0.0.10") is AuthenticationError


def test_one_client_guessing_many_key_ids_is_refused_but_others_are_not() -> None:
    source, clock = _CountingSource([VALID]), _Clock()
    verifier = KeyVerifier(source, failure_limit=3, failure_window_s=30, clock=clock)
    guesses = [_guess(f"{i:016x}") for i in range(4)]
    outcomes = [_verify(verifier, guess, "203.0.113.7") for guess in guesses]
    assert outcomes == [AuthenticationError] * 3 + [RateLimitedError]
    assert _verify(verifier, "not-even-a-key", "203.0.113.7") is RateLimitedError
    assert _verify(verifier, _guess("aaaaaaaaaaaaaaaa"), "198.51.100.2") is AuthenticationError
    clock.now += 31
    assert _verify(verifier, VALID, "203.0.113.7") is None


def test_a_valid_key_is_checked_once_per_cache_period_and_never_limited() -> None:
    source, clock = _CountingSource([VALID]), _Clock()
    verifier = KeyVerifier(source, failure_limit=1, failure_window_s=60, clock=clock)
    for _ in range(50):
        assert _verify(verifier, VALID, "10.1.1.1") is None
    assert source.checks == 1
    assert _verify(verifier, _guess(index=1), "10.1.1.1") is AuthenticationError
    clock.now += 5  # past the cache: checked again, though this client is now limited
    assert _verify(verifier, VALID, "10.1.1.1") is None
    assert source.checks == 3


def test_failure_limiter_forgets_the_oldest_subjects_past_its_bound() -> None:
    limiter = FailureLimiter(1, 60, clock=_Clock(), max_subjects=3)
    limiter.record(["a", "b"])
    limiter.record(["c", "d"])
    assert limiter.retry_after(["a"]) is None  # forgotten
    assert limiter.retry_after(["d"]) == pytest.approx(60)


def test_rest_answers_429_with_retry_after_on_both_scoring_paths(
    make_client: Callable[..., TestClient],
    serving_settings: Settings,
    source: InMemoryEndpointSource,
) -> None:
    source.add_api_key(VALID)
    client = make_client(
        serving_settings.model_copy(update={"host": "0.0.0.0", "auth_failure_limit": 2})
    )
    body = png_bytes(np.full((50, 50, 3), 230, dtype=np.uint8))
    headers = {"Content-Type": "application/x-image"}

    def post(path: str, key: str):  # type: ignore[no-untyped-def]
        return client.post(path, content=body, headers={**headers, "X-API-Key": key})

    assert post("/predict-breast-cancer", VALID).status_code == 200
    assert post("/predict-breast-cancer", _guess(index=1)).status_code == 401
    assert post("/endpoints/ep/invocations", _guess(index=2)).status_code == 401
    for answer in (
        post("/predict-breast-cancer", _guess(index=3)),
        client.get("/endpoints", headers={"Authorization": f"Bearer {OTHER_ID}{'x' * 43}"}),
    ):
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert post("/predict-breast-cancer", VALID).status_code == 200
