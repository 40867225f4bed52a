"""Read-only view of the endpoints this server knows and serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bcd.serving._schemas import ERROR_RESPONSES
from bcd.serving.deps import ApiKeyDep, RouterDep, SettingsDep

router = APIRouter(tags=["endpoints"])

_EXAMPLE = {
    "EndpointName": "bcd-default",
    "EndpointStatus": "InService",
    "EndpointConfigName": "bcd-default-accurate-fast",
    "Version": 1,
    "Serving": True,
    "ServingVersion": 1,
    "FailureReason": None,
    "ProductionVariants": [
        {
            "VariantName": "accurate",
            "ModelName": "bcd-bundled-accurate",
            "CurrentInstanceCount": 1,
            "CurrentWeight": 1.0,
            "DecisionThreshold": 0.5,
        },
        {
            "VariantName": "fast",
            "ModelName": "bcd-bundled",
            "CurrentInstanceCount": 1,
            "CurrentWeight": 0.0,
            "DecisionThreshold": 0.372,
        },
    ],
}


@router.get(
    "/endpoints",
    summary="List endpoints",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"Endpoints": [_EXAMPLE], "DefaultEndpoint": "bcd-default"}
                }
            }
        }
    },
)
async def list_endpoints(
    endpoints: RouterDep, settings: SettingsDep, _key: ApiKeyDep
) -> dict[str, Any]:
    """Every endpoint in the registry (that this server serves), with what is loaded, and
    the name of the endpoint behind ``POST /predict-breast-cancer``."""
    return {"Endpoints": endpoints.describe(), "DefaultEndpoint": settings.default_endpoint}


@router.get(
    "/endpoints/{name}",
    summary="Describe an endpoint",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}, **ERROR_RESPONSES},
)
async def describe_endpoint(name: str, endpoints: RouterDep, _key: ApiKeyDep) -> dict[str, Any]:
    """One endpoint: status, configuration version, variants (with each loaded model's
    decision threshold), and whether it is loaded."""
    return endpoints.describe(name)[0]
