"""Read-only view of the endpoints this server knows and serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bcd.serving._schemas import ERROR_RESPONSES
from bcd.serving.deps import ApiKeyDep, RouterDep

router = APIRouter(tags=["endpoints"])

_EXAMPLE = {
    "EndpointName": "bcd-default",
    "EndpointStatus": "InService",
    "EndpointConfigName": "bcd-default-config",
    "Version": 1,
    "Serving": True,
    "ServingVersion": 1,
    "FailureReason": None,
    "ProductionVariants": [
        {
            "VariantName": "AllTraffic",
            "ModelName": "idc-cnn-v1",
            "CurrentInstanceCount": 1,
            "CurrentWeight": 1.0,
            "DecisionThreshold": 0.5,
        }
    ],
}


@router.get(
    "/endpoints",
    summary="List endpoints",
    responses={200: {"content": {"application/json": {"example": {"Endpoints": [_EXAMPLE]}}}}},
)
async def list_endpoints(endpoints: RouterDep, _key: ApiKeyDep) -> dict[str, Any]:
    """Every endpoint in the registry (that this server serves), with what is loaded."""
    return {"Endpoints": endpoints.describe()}


@router.get(
    "/endpoints/{name}",
    summary="Describe an endpoint",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}, **ERROR_RESPONSES},
)
async def describe_endpoint(name: str, endpoints: RouterDep, _key: ApiKeyDep) -> dict[str, Any]:
    """One endpoint: status, configuration version, variants, and whether it is loaded."""
    return endpoints.describe(name)[0]
