"""``/slides/{id}/explanations/{row}/{col}.png``: Grad-CAM of one tile, on demand.

The viewer asks for it when a pathologist picks a tile. The picture is the
tile as the model saw it, enlarged, with the Grad-CAM heat of its IDC
evidence blended on and a colour key (:mod:`bcd.slides._explain`). It is
computed from the torch weights (``model.pt``) kept in the folder of the model
that analysed the slide; serving itself never needs torch, so without torch or
without ``model.pt`` the answer is 409 ``explanations_unavailable``.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from bcd.errors import (
    ExplanationsUnavailableError,
    NotFoundError,
    NotReadyError,
)
from bcd.serving.deps import ApiKeyDep
from bcd.serving.routes.slides import SlideServiceDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["slides"])

_explainers_lock = threading.Lock()


def _model_dir(request: Request, described: dict[str, Any]) -> Path:
    """The folder of the model that analysed the slide, from the app's loaded endpoints.

    Raises:
        ExplanationsUnavailableError: The endpoint no longer serves that model.
    """
    model = (described.get("report") or {}).get("model") or {}
    endpoint = model.get("endpoint") or described["endpoint"]
    endpoints = request.app.state.router
    try:
        if not endpoints.has(endpoint) and endpoints.needs_refresh(endpoint):
            endpoints.refresh(endpoint)
        with endpoints.use(endpoint) as loaded:
            variant = loaded.variants.get(model.get("variant"))
            if variant is None or variant.model_name != model.get("model", variant.model_name):
                raise ExplanationsUnavailableError(
                    f"endpoint {endpoint!r} no longer serves model {model.get('model')!r}, "
                    "which analysed this slide; analyse the slide again to explain its tiles"
                )
            return Path(variant.runtime.spec.directory)
    except (NotFoundError, NotReadyError) as error:
        raise ExplanationsUnavailableError(
            f"the model that analysed this slide is not available: {error.message}"
        ) from None


def _explainer(request: Request, model_dir: Path) -> Any:
    """The app's explainer for a model folder, loaded once (again if model.pt changes)."""
    from bcd.slides._explain import load_explainer

    weights = model_dir / "model.pt"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else None
    with _explainers_lock:
        cache = getattr(request.app.state, "explainers", None)
        if cache is None:
            cache = request.app.state.explainers = {}
        cached = cache.get(model_dir)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        explainer = load_explainer(model_dir)
        cache[model_dir] = (stamp, explainer)
        return explainer


def _check_tissue_tile(service: Any, analysis_id: str, row: int, col: int) -> None:
    """Refuse (404) a tile outside the analysis grid or one that was not scored."""
    probabilities = np.load(
        service.output_path(analysis_id, "probabilities.npy"), allow_pickle=False
    )
    rows, cols = probabilities.shape
    if not (0 <= row < rows and 0 <= col < cols):
        raise NotFoundError(
            f"tile ({row}, {col}) is outside the {rows}x{cols} grid of analysis {analysis_id}"
        )
    if not np.isfinite(probabilities[row, col]):
        raise NotFoundError(
            f"tile ({row}, {col}) of analysis {analysis_id} is off tissue and was not scored; "
            "pick a tile of the heatmap"
        )


@router.get(
    "/slides/{analysis_id}/explanations/{row}/{col}.png",
    summary="Grad-CAM explanation of one tile: where the model sees IDC in it",
    response_class=Response,
    responses={
        404: {"description": "Unknown analysis, or a tile outside the grid or off tissue"},
        409: {"description": "Not completed, or explanations unavailable (no torch/model.pt)"},
    },
)
def tile_explanation(
    analysis_id: str,
    row: int,
    col: int,
    request: Request,
    service: SlideServiceDep,
    _key: ApiKeyDep,
) -> Response:
    """The tile at grid ``row``, ``col``, enlarged, with its Grad-CAM heat and a colour key."""
    from PIL import Image

    from bcd.slides._explain import explanation_image, explanations_supported
    from bcd.slides._png import encode_png

    described = service.describe(analysis_id)
    _check_tissue_tile(service, analysis_id, row, col)
    missing = explanations_supported()
    if missing is not None:
        raise ExplanationsUnavailableError(missing)
    explainer = _explainer(request, _model_dir(request, described))
    tile = np.asarray(
        Image.open(io.BytesIO(service.tile_png(analysis_id, row, col))).convert("RGB")
    )
    heat = explainer.heatmaps(tile[None])[0]
    return Response(
        encode_png(explanation_image(tile, heat)),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600"},
    )
