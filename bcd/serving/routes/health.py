"""Liveness and readiness probes (no API key: orchestrators call them)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from bcd.serving._http_errors import error_body
from bcd.serving._schemas import ErrorResponse
from bcd.serving.deps import RouterDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the server runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: models are loaded",
    responses={503: {"model": ErrorResponse, "description": "No endpoint loaded yet"}},
)
async def readyz(endpoints: RouterDep) -> Response:
    """200 once the first load has finished and at least one endpoint serves; 503 before."""
    if endpoints.ready:
        served = [item["EndpointName"] for item in endpoints.describe() if item["Serving"]]
        return JSONResponse({"status": "ready", "endpoints": served})
    message = "no endpoint is loaded yet; retry shortly (see GET /endpoints for failures)"
    return Response(error_body("not_ready", message), 503, media_type="application/json")
