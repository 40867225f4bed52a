"""``POST /endpoints/{name}/invocations``: the runtime route (SageMaker's InvokeEndpoint)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from bcd.serving._schemas import SCORING_REQUEST_BODY, SCORING_RESPONSES
from bcd.serving.deps import BodyDep, ServiceDep

router = APIRouter(tags=["invocations"])

TtaQuery = Annotated[
    bool | None,
    Query(description="Average the 8 rotations/mirrors of each image (default: the model's)"),
]
TargetVariantHeader = Annotated[
    str | None,
    Header(
        description="Pin a production variant by name (the bundled endpoint: `fast` or "
        "`accurate`); without it a variant is drawn by traffic weight"
    ),
]


@router.post(
    "/endpoints/{name}/invocations",
    summary="Score images on an endpoint",
    response_class=Response,
    responses=SCORING_RESPONSES,
    openapi_extra=SCORING_REQUEST_BODY,
)
async def invoke_endpoint(
    name: str,
    service: ServiceDep,
    body: BodyDep,
    content_type: Annotated[str | None, Header()] = None,
    accept: Annotated[str | None, Header()] = None,
    x_target_variant: TargetVariantHeader = None,
    tta: TtaQuery = None,
) -> Response:
    """Probabilities for every image in the body, from a variant chosen by weight."""
    invocation = await service.invoke(
        name, content_type, body, target_variant=x_target_variant, tta=tta
    )
    content, media = invocation.render(accept)
    return Response(
        content,
        media_type=media,
        headers={"X-Invoked-Production-Variant": invocation.variant},
    )
