"""A lean ASGI path for the two scoring routes, in front of FastAPI's routing.

``POST /predict-breast-cancer`` and ``POST /endpoints/{name}/invocations`` are
the hot routes: under load, FastAPI's per-request routing, dependency solving
(thread hops included) and parameter validation cost more than scoring a
micro-batched patch. :class:`ScoringFastPath` answers those two routes
directly with the same building blocks the FastAPI routes use — the API-key
check, :func:`~bcd.serving._security.read_asgi_body` (``read_body``'s body
limit, upload timeout and errors), :meth:`InferenceService.invoke` (decoding,
pixel limit, routing, scoring, metrics), :meth:`Invocation.render` and
:func:`~bcd.serving._http_errors.error_answer` — so statuses, error codes,
bodies and headers are the same as on the FastAPI routes.

Without CORS the path sits in front of FastAPI itself (``create_app`` makes
it the app's ``scoring`` hook), so the scoring routes skip Starlette's whole
middleware stack and the path counts its requests in Prometheus itself; with
CORS it is the innermost middleware, so CORS headers still apply.

Anything unusual goes to FastAPI untouched: other methods or paths, a query
string other than ``tta=true|false|1|0``, a ``root_path``, dependency
overrides (tests), or ``app.state.lean_scoring`` set to ``False``. The FastAPI
routes stay the reference and document the API in OpenAPI.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from bcd.errors import BcdError
from bcd.serving._http_errors import INTERNAL_ERROR_CODE, error_answer, error_body
from bcd.serving._metrics import ServingMetrics
from bcd.serving._security import key_from_headers, read_asgi_body

logger = logging.getLogger(__name__)

PREDICT_PATH = "/predict-breast-cancer"
INVOCATIONS_PATH = "/endpoints/{name}/invocations"
# Starlette's own pattern for a ``{name}`` path parameter: one non-empty segment.
_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")
_TTA_QUERY = re.compile(rb"^tta=(true|false|1|0)$", re.IGNORECASE)
_WANTED_HEADERS = frozenset(
    {b"content-type", b"content-length", b"accept", b"x-target-variant", b"authorization",
     b"x-api-key"}
)  # fmt: skip
_JSON = b"application/json"


class ScoringFastPath:
    """Pure ASGI middleware that answers the scoring routes without FastAPI's routing.

    Args:
        app: What answers every other request (FastAPI, or the rest of its
            middleware stack).
        owner: The FastAPI app; its ``state`` holds settings, service and key
            checks, read on every request so tests may swap them.
        routes: The app's routes by path template; the scoring routes that are
            missing here are left to FastAPI.
        metrics: Count answered requests in ``bcd_http_requests_total`` here
            (``None``: a request-counting middleware outside does).
    """

    def __init__(
        self,
        app: ASGIApp,
        owner: Any,
        routes: dict[str, Any],
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.app = app
        self.owner = owner
        self._metrics = metrics
        # (route template, status) -> its labelled counter, looked up once.
        self._counters: dict[tuple[str, int], Any] = {}
        # Only routes that exist are served here; each keeps its route object
        # so the metrics middleware labels requests by the same template.
        self._predict_route = routes.get(PREDICT_PATH)
        self._invocations_route = routes.get(INVOCATIONS_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._match(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        route, endpoint, tta = target
        scope["route"] = route
        await self._score(scope, receive, send, endpoint, tta)

    def _match(self, scope: Scope) -> tuple[Any, str | None, bool | None] | None:
        """``(route, endpoint or None for the default, tta)``, or ``None`` to defer."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        owner = self.owner
        if owner.dependency_overrides or not owner.state.lean_scoring:
            return None
        path = scope["path"]
        if path == PREDICT_PATH and self._predict_route is not None:
            route, endpoint = self._predict_route, None
        else:
            match = _INVOCATIONS.match(path) if self._invocations_route is not None else None
            if match is None:
                return None
            route, endpoint = self._invocations_route, match.group(1)
        query = scope.get("query_string", b"")
        if not query:
            return route, endpoint, None
        flag = _TTA_QUERY.match(query)
        if flag is None:
            return None  # FastAPI validates (and ignores) anything else
        return route, endpoint, flag.group(1).lower() in (b"true", b"1")

    async def _score(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str | None, tta: bool | None
    ) -> None:
        # First value of each header, decoded as Starlette's Headers do.
        headers: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _WANTED_HEADERS and name not in headers:
                headers[name] = value.decode("latin-1")
        state = self.owner.state
        settings = state.settings
        try:
            if state.keys_required:
                client = scope.get("client")
                await state.key_verifier.verify(
                    key_from_headers(headers.get(b"authorization"), headers.get(b"x-api-key")),
                    client[0] if client else None,
                )
            body = await read_asgi_body(receive, headers.get(b"content-length"), settings)
            invocation = await state.service.invoke(
                endpoint if endpoint is not None else settings.default_endpoint,
                headers.get(b"content-type"),
                body,
                target_variant=headers.get(b"x-target-variant"),
                tta=tta,
            )
            content, media = invocation.render(headers.get(b"accept"))
            status = 200
            extra = [(b"x-invoked-production-variant", invocation.variant.encode("latin-1"))]
            media_bytes = media.encode("latin-1")
        except BcdError as error:
            status, content, error_headers = error_answer(error)
            extra = [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error_headers.items()
            ]
            media_bytes = _JSON
        except Exception:
            logger.exception("unexpected error while answering a request")
            status = 500
            content = error_body(
                INTERNAL_ERROR_CODE, "internal error; the server logged the details"
            )
            extra, media_bytes = [], _JSON
        extra.append((b"content-length", str(len(content)).encode()))
        extra.append((b"content-type", media_bytes))
        if self._metrics is not None:
            self._count(scope["route"].path, status)
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": content})

    def _count(self, route: str, status: int) -> None:
        counter = self._counters.get((route, status))
        if counter is None:
            assert self._metrics is not None
            counter = self._metrics.http_requests.labels(route, str(status))
            self._counters[(route, status)] = counter
        counter.inc()
