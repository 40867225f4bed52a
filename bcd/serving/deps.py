"""FastAPI dependencies of the serving routes, as ``Annotated`` aliases.

Everything comes from ``request.app.state`` (set by :func:`bcd.serving.create_app`),
so tests can build an app with their own settings and endpoint source, or
override any dependency.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from bcd.config import Settings
from bcd.serving._metrics import ServingMetrics
from bcd.serving._router import EndpointRouter
from bcd.serving._security import key_from_headers, read_body
from bcd.serving._service import InferenceService


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


async def get_service(request: Request) -> InferenceService:
    """The app's inference service."""
    return request.app.state.service


async def get_router(request: Request) -> EndpointRouter:
    """The app's endpoint router."""
    return request.app.state.router


async def get_metrics(request: Request) -> ServingMetrics:
    """The app's metrics."""
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
RouterDep = Annotated[EndpointRouter, Depends(get_router)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]


async def require_api_key(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[
        str | None, Header(description="API key (or Authorization: Bearer)")
    ] = None,
) -> None:
    """Refuse the request without a valid key, when this server requires keys.

    Raises:
        AuthenticationError: Missing or unknown key.
        PermissionDeniedError: Revoked key.
        RateLimitedError: Too many failed key checks from this client or for this key id.
    """
    if request.app.state.keys_required:
        client = request.client.host if request.client else None
        await request.app.state.key_verifier.verify(
            key_from_headers(authorization, x_api_key), client
        )


ApiKeyDep = Annotated[None, Depends(require_api_key)]


async def request_body(request: Request, settings: SettingsDep, _key: ApiKeyDep) -> bytes:
    """The body, read only after the key check, refused once over ``max_body_bytes``.

    Raises:
        PayloadTooLargeError: The body is over the limit.
        BcdTimeoutError: The client took longer than the request timeout to send it.
    """
    return await read_body(request.stream(), request.headers.get("content-length"), settings)


BodyDep = Annotated[bytes, Depends(request_body)]
