"""Serving: ONNX Runtime inference, micro-batching, request decoding, the REST app.

Serving never imports torch. Names are loaded lazily, so importing
``bcd.serving`` costs nothing until one is used.

- :func:`create_app` — the FastAPI app of ``bcd serve``.
- :class:`ModelRuntime` — a model folder loaded for inference (sessions + batcher).
- :class:`EndpointRouter` — the registry's endpoints, loaded and kept in step.
- :class:`InferenceService` / :class:`Invocation` — body in, predictions out.
- :func:`local_service` — the process-wide in-process service (``invoke_endpoint``
  without a server).
- :func:`decode_request` — every accepted content type → RGB patches.
- :data:`HTTP_STATUS` / :func:`status_for` — the error-to-HTTP table.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bcd.config import Settings
    from bcd.serving._service import InferenceService

__all__ = [
    "HTTP_STATUS",
    "BaseEndpointSource",
    "EndpointRouter",
    "EndpointSpec",
    "InMemoryEndpointSource",
    "InferenceService",
    "Invocation",
    "MicroBatcher",
    "ModelRuntime",
    "ModelSpec",
    "Preprocessor",
    "RegistryEndpointSource",
    "VariantSpec",
    "create_app",
    "decode_request",
    "load_model_spec",
    "local_service",
    "status_for",
]

_HOMES = {
    "HTTP_STATUS": "bcd.serving._http_errors",
    "status_for": "bcd.serving._http_errors",
    "BaseEndpointSource": "bcd.serving._source",
    "EndpointSpec": "bcd.serving._source",
    "VariantSpec": "bcd.serving._source",
    "InMemoryEndpointSource": "bcd.serving._source",
    "RegistryEndpointSource": "bcd.serving._source",
    "EndpointRouter": "bcd.serving._router",
    "InferenceService": "bcd.serving._service",
    "Invocation": "bcd.serving._service",
    "MicroBatcher": "bcd.serving._batching",
    "ModelRuntime": "bcd.serving._runtime",
    "ModelSpec": "bcd.serving._model_spec",
    "load_model_spec": "bcd.serving._model_spec",
    "Preprocessor": "bcd.serving._preprocess",
    "create_app": "bcd.serving.app",
    "decode_request": "bcd.serving._decode",
}

_local_lock = threading.Lock()
_local_services: dict[tuple[str, str], InferenceService] = {}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'bcd.serving' has no attribute {name!r}")


def local_service(settings: Settings | None = None) -> InferenceService:
    """The in-process inference service for a metadata store (cached per store).

    Endpoints are resolved from the registry on first use and re-checked at
    most once a second, so an update is picked up without a server.

    Args:
        settings: Which store; default :func:`bcd.config.get_settings`.
    """
    from bcd.config import get_settings
    from bcd.serving._router import EndpointRouter
    from bcd.serving._service import InferenceService
    from bcd.serving._source import RegistryEndpointSource

    settings = settings or get_settings()
    key = (settings.resolved_database_url, str(settings.home))
    with _local_lock:
        service = _local_services.get(key)
        if service is None:
            router = EndpointRouter(RegistryEndpointSource(settings), settings)
            service = InferenceService(router, settings)
            _local_services[key] = service
        return service


def close_local_services() -> None:
    """Release every in-process service's models (tests, and before exit)."""
    with _local_lock:
        services = list(_local_services.values())
        _local_services.clear()
    for service in services:
        service.router.close()
