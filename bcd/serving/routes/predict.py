"""``POST /predict-breast-cancer``: the original gateway route, on the default endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from bcd.serving._schemas import SCORING_REQUEST_BODY, SCORING_RESPONSES
from bcd.serving.deps import BodyDep, ServiceDep, SettingsDep
from bcd.serving.routes.invocations import TargetVariantHeader, TtaQuery

router = APIRouter(tags=["predict"])


@router.post(
    "/predict-breast-cancer",
    summary="Is there invasive ductal carcinoma in this patch?",
    response_class=Response,
    responses=SCORING_RESPONSES,
    openapi_extra=SCORING_REQUEST_BODY,
)
async def predict_breast_cancer(
    service: ServiceDep,
    settings: SettingsDep,
    body: BodyDep,
    content_type: Annotated[str | None, Header()] = None,
    accept: Annotated[str | None, Header()] = None,
    x_target_variant: TargetVariantHeader = None,
    tta: TtaQuery = None,
) -> Response:
    """Score the body on the default endpoint (``bcd serve --default-endpoint``).

    Send ``Accept: text/plain`` for "Cancer detected" / "Cancer not detected" alone,
    and ``X-Target-Variant`` to pin a variant (the bundled endpoint's ``fast`` or
    ``accurate``).
    """
    invocation = await service.invoke(
        settings.default_endpoint, content_type, body, target_variant=x_target_variant, tta=tta
    )
    content, media = invocation.render(accept)
    return Response(
        content,
        media_type=media,
        headers={"X-Invoked-Production-Variant": invocation.variant},
    )
