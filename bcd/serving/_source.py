"""Where serving learns which endpoints exist, records traffic, and checks keys.

:class:`RegistryEndpointSource` is the real one, over :mod:`bcd.registry`; it
is the only place serving touches the registry, so a change in the registry's
API is absorbed here. :class:`InMemoryEndpointSource` serves tests and
embedding (no database).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bcd.config import Settings
from bcd.errors import AuthenticationError, NotFoundError, PermissionDeniedError

# Endpoints in these states have a configuration to serve.
SERVABLE_STATUSES = frozenset({"InService", "Updating"})


@dataclass(frozen=True)
class VariantSpec:
    """One production variant of an endpoint, as the registry resolved it."""

    variant_name: str
    model_name: str
    model_dir: Path
    instance_count: int = 1
    weight: float = 1.0
    #: The ONNX file's SHA-256 recorded at registration; checked once per load ("" skips).
    onnx_sha256: str = ""


@dataclass(frozen=True)
class EndpointSpec:
    """An endpoint and the configuration (``version``) it should serve."""

    name: str
    status: str
    config_name: str
    version: int
    variants: tuple[VariantSpec, ...] = field(default_factory=tuple)
    #: Why the endpoint is Failed; not part of what is served, so not compared.
    failure_reason: str | None = field(default=None, compare=False)

    @property
    def servable(self) -> bool:
        """Whether the endpoint's status allows serving it."""
        return self.status in SERVABLE_STATUSES and bool(self.variants)


class BaseEndpointSource(ABC):
    """The registry as serving sees it.

    Thread safety: implementations are called from the router's poll thread,
    from request handlers (key checks) and from the stats flush at once.
    """

    @abstractmethod
    def list_endpoints(self) -> list[EndpointSpec]:
        """Every endpoint, whatever its status."""

    @abstractmethod
    def resolve_endpoint(self, name: str) -> EndpointSpec:
        """One endpoint.

        Raises:
            NotFoundError: No endpoint has that name.
        """

    @abstractmethod
    def record_invocations(
        self, endpoint: str, variant: str, count: int, latency_ms_total: float, errors: int
    ) -> None:
        """Add a batch of per-variant invocation counts and latencies."""

    @abstractmethod
    def verify_api_key(self, raw_key: str) -> None:
        """Accept a valid key.

        Raises:
            AuthenticationError: The key is unknown.
            PermissionDeniedError: The key was revoked.
        """

    def fail_endpoint(self, name: str, version: int, reason: str) -> None:  # noqa: B027
        """Record that ``version`` of an endpoint cannot be served (its model file
        no longer matches its recorded SHA-256). The default records nothing."""


def _spec_from_registry(resolved: Any) -> EndpointSpec:
    return EndpointSpec(
        name=resolved.name,
        status=resolved.status,
        config_name=resolved.config_name,
        version=int(resolved.version),
        variants=tuple(
            VariantSpec(
                variant_name=variant.variant_name,
                model_name=variant.model_name,
                model_dir=Path(variant.model_dir),
                instance_count=int(variant.instance_count),
                weight=float(variant.weight),
                onnx_sha256=str(getattr(variant, "onnx_sha256", "") or ""),
            )
            for variant in resolved.variants
        ),
        failure_reason=getattr(resolved, "failure_reason", None),
    )


class RegistryEndpointSource(BaseEndpointSource):
    """Endpoints, stats and keys from :mod:`bcd.registry` (the metadata store).

    Args:
        settings: Settings of the store to read.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_endpoints(self) -> list[EndpointSpec]:
        from bcd import registry

        return [_spec_from_registry(e) for e in registry.list_endpoints(settings=self.settings)]

    def resolve_endpoint(self, name: str) -> EndpointSpec:
        from bcd import registry

        return _spec_from_registry(registry.resolve_endpoint(name, settings=self.settings))

    def record_invocations(
        self, endpoint: str, variant: str, count: int, latency_ms_total: float, errors: int
    ) -> None:
        from bcd import registry

        registry.record_invocations(
            endpoint, variant, count, latency_ms_total, errors=errors, settings=self.settings
        )

    def verify_api_key(self, raw_key: str) -> None:
        from bcd.registry import keys

        keys.verify_api_key(raw_key, settings=self.settings)

    def fail_endpoint(self, name: str, version: int, reason: str) -> None:
        from bcd import registry

        registry.fail_endpoint(name, version, reason, settings=self.settings)


class InMemoryEndpointSource(BaseEndpointSource):
    """Endpoints and keys held in memory: for tests and embedding.

    Args:
        endpoints: Initial endpoints.
        api_keys: Raw keys that are valid.
    """

    def __init__(
        self, endpoints: list[EndpointSpec] | None = None, api_keys: list[str] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._endpoints = {spec.name: spec for spec in endpoints or []}
        self._keys = {self._hash(key): True for key in api_keys or []}
        self.invocations: dict[tuple[str, str], list[float]] = {}

    @staticmethod
    def _hash(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    def put(self, spec: EndpointSpec) -> None:
        """Create or replace an endpoint."""
        with self._lock:
            self._endpoints[spec.name] = spec

    def delete(self, name: str) -> None:
        """Remove an endpoint (no error when absent)."""
        with self._lock:
            self._endpoints.pop(name, None)

    def add_api_key(self, raw_key: str) -> None:
        """Make ``raw_key`` valid."""
        with self._lock:
            self._keys[self._hash(raw_key)] = True

    def revoke_api_key(self, raw_key: str) -> None:
        """Mark ``raw_key`` revoked (known, but refused)."""
        with self._lock:
            self._keys[self._hash(raw_key)] = False

    def list_endpoints(self) -> list[EndpointSpec]:
        with self._lock:
            return list(self._endpoints.values())

    def resolve_endpoint(self, name: str) -> EndpointSpec:
        with self._lock:
            if name not in self._endpoints:
                raise NotFoundError(f"endpoint {name!r} does not exist")
            return self._endpoints[name]

    def record_invocations(
        self, endpoint: str, variant: str, count: int, latency_ms_total: float, errors: int
    ) -> None:
        with self._lock:
            totals = self.invocations.setdefault((endpoint, variant), [0, 0.0, 0])
            totals[0] += count
            totals[1] += latency_ms_total
            totals[2] += errors

    def fail_endpoint(self, name: str, version: int, reason: str) -> None:
        with self._lock:
            spec = self._endpoints.get(name)
            if spec is not None and spec.version == version and spec.servable:
                self._endpoints[name] = dataclasses.replace(
                    spec, status="Failed", failure_reason=reason
                )

    def verify_api_key(self, raw_key: str) -> None:
        with self._lock:
            state = self._keys.get(self._hash(raw_key))
        if state is None:
            raise AuthenticationError("unknown API key; create one with: bcd keys create")
        if not state:
            raise PermissionDeniedError("this API key was revoked; create a new one")
