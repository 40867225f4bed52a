"""Prometheus metrics: requests, latencies and batch sizes per endpoint variant."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bcd.serving.deps import ApiKeyDep, MetricsDep

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(metrics: MetricsDep, _key: ApiKeyDep) -> Response:
    """Counters and histograms in the Prometheus text format."""
    content, content_type = metrics.render()
    return Response(content, media_type=content_type)
