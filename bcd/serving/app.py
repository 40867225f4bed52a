"""The FastAPI application: :func:`create_app` wires settings, router and routes.

Nothing happens at import time. The app's lifespan starts the endpoint router
(whose first pass loads the models in the background, so ``/healthz`` answers
at once and ``/readyz`` turns 200 when they are loaded) and stops it on
shutdown, flushing invocation counts to the registry.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import bcd
from bcd.config import Settings, get_settings
from bcd.errors import BcdError
from bcd.serving._fast_path import ScoringFastPath
from bcd.serving._http_errors import INTERNAL_ERROR_CODE, error_answer, error_body
from bcd.serving._metrics import ServingMetrics
from bcd.serving._router import EndpointRouter
from bcd.serving._security import KeyVerifier, keys_required
from bcd.serving._service import InferenceService
from bcd.serving._source import BaseEndpointSource, RegistryEndpointSource
from bcd.serving.routes import ROUTE_MODULES

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"

_DESCRIPTION = """
Detects invasive ductal carcinoma (IDC) in 50×50 H&E histopathology patches.

- `POST /predict-breast-cancer` scores one image (or a batch) on the default endpoint.
- `POST /endpoints/{name}/invocations` scores on a named endpoint; `X-Target-Variant` pins a
  production variant.
- Bodies: raw `application/x-image` / `image/png` / `image/jpeg` / `image/tiff`, JSON
  (`instances` arrays, base64 `image` / `images`), `multipart/form-data`, `application/x-npy`.
- Errors: `{"error": {"code", "message"}}` with a stable code.

Research use only; not a diagnostic device.
"""


class _HttpMetricsMiddleware:
    """Counts answered requests by route template and status (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                self.metrics.http_requests.labels(path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


class _ServingApp(FastAPI):
    """FastAPI with an optional ``scoring`` hook in front of its middleware stack.

    The hook (:class:`ScoringFastPath`) answers the scoring routes and hands
    every other request to FastAPI.
    """

    scoring: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.scoring is None:
            await super().__call__(scope, receive, send)
        else:
            await self.scoring(scope, receive, send)


def _json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(code, message), status, headers=headers, media_type="application/json"
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BcdError)
    async def bcd_error(_request: Request, error: BcdError) -> Response:
        status, body, headers = error_answer(error)
        return Response(body, status, headers=headers, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in error.errors()
        )
        return _json_error(400, "invalid_input", f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _json_error(
            error.status_code, codes.get(error.status_code, "http_error"), str(error.detail)
        )

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, error: Exception) -> Response:
        logger.error("unexpected error while answering a request", exc_info=error)
        return _json_error(
            500, INTERNAL_ERROR_CODE, "internal error; the server logged the details"
        )


def create_app(
    settings: Settings | None = None,
    *,
    source: BaseEndpointSource | None = None,
    only: set[str] | None = None,
    poll_interval_s: float = 1.0,
    seed: int | None = None,
    cores: int | None = None,
    multiprocess_metrics: bool = False,
) -> FastAPI:
    """Build the REST application.

    Args:
        settings: Limits, batching, default endpoint, host (decides whether keys
            are required), CORS origins. Default: :func:`bcd.config.get_settings`.
        source: Where endpoints come from; default the registry of ``settings``.
        only: Serve only these endpoint names (``bcd serve --endpoint``).
        poll_interval_s: How often the registry is re-read for changed endpoints.
        seed: Seeds the weighted variant choice (tests).
        cores: CPU cores the inference sessions share (default all this process
            may use; ``bcd serve --workers N`` gives each worker its share).
        multiprocess_metrics: ``/metrics`` sums the series of every worker
            process (``bcd serve --workers N``; needs ``PROMETHEUS_MULTIPROC_DIR``).

    Returns:
        The FastAPI app; run it with uvicorn (``bcd serve``) or a test client.
    """
    settings = settings or get_settings()
    source = source or RegistryEndpointSource(settings)
    metrics = ServingMetrics(multiprocess=multiprocess_metrics)
    router = EndpointRouter(
        source,
        settings,
        metrics=metrics,
        only=only,
        poll_interval_s=poll_interval_s,
        seed=seed,
        cores=cores,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from PIL import Image

        # Pillow's own decompression-bomb guard, on top of the header check in decoding.
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
        router.start()
        try:
            yield
        finally:
            router.close()

    app = _ServingApp(
        title="bcd — IDC detection API",
        version=bcd.__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.router = router
    app.state.metrics = metrics
    app.state.service = InferenceService(router, settings)
    app.state.keys_required = keys_required(settings)
    app.state.key_verifier = KeyVerifier(
        source,
        failure_limit=settings.auth_failure_limit,
        failure_window_s=settings.auth_failure_window_s,
    )
    # The scoring routes' lean ASGI path (False: FastAPI answers them, as a reference).
    app.state.lean_scoring = True
    _install_error_handlers(app)

    routes: dict[str, Any] = {}
    for name in ROUTE_MODULES:
        module_name = f"bcd.serving.routes.{name}"
        if importlib.util.find_spec(module_name) is not None:
            module_router = importlib.import_module(module_name).router
            app.include_router(module_router)
            routes.update({route.path: route for route in module_router.routes})

    if not settings.cors_origins:
        # In front of FastAPI: the scoring routes skip its middleware stack.
        app.scoring = ScoringFastPath(
            functools.partial(FastAPI.__call__, app), owner=app, routes=routes, metrics=metrics
        )
    else:
        from fastapi.middleware.cors import CORSMiddleware

        # Innermost of the middlewares: CORS and the request counter still see
        # the requests that the lean scoring path answers.
        app.add_middleware(ScoringFastPath, owner=app, routes=routes)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Target-Variant"],
        )
    app.add_middleware(_HttpMetricsMiddleware, metrics=metrics)

    if (WEB_DIR / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def describe_security(settings: Settings) -> dict[str, Any]:
    """What the server will enforce, for the ``bcd serve`` banner."""
    return {
        "api_keys_required": keys_required(settings),
        "max_body_bytes": settings.max_body_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "request_timeout_s": settings.request_timeout_s,
        "header_timeout_s": settings.header_timeout_s,
        "keep_alive_s": settings.keep_alive_s,
        "max_connections": settings.max_connections,
        "slide_upload_timeout_s": settings.slide_upload_timeout_s,
        "auth_failure_limit": settings.auth_failure_limit,
        "cors_origins": list(settings.cors_origins),
    }
