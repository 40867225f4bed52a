"""``/slides/{id}/…`` Deep Zoom routes: the slide and its heatmap as DZI pyramids.

``GET /slides/{id}/dzi`` describes the slide (tiles under ``dzi_files/``, JPEG);
``GET /slides/{id}/overlay.dzi`` and ``truth.dzi`` describe the heatmap and the
ground truth (tiles under ``overlay_files/`` and ``truth_files/``, PNG with
alpha), all at the slide's level-0 size so a viewer stacks them; ``GET
/slides/{id}/viewer`` gives a viewer the sizes and the tile grid, and ``GET
/slides/{id}/tiles/{row}/{col}.json`` the scores of one tile. Tiles are drawn on
demand from the slide and kept in a bounded cache
(:mod:`bcd.slides._deepzoom`). Included before :mod:`bcd.serving.routes.slides`,
whose ``/slides/{id}/{output}`` would otherwise take these names.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from bcd.errors import NotFoundError
from bcd.serving.deps import ApiKeyDep
from bcd.serving.routes.slides import SlideServiceDep

if TYPE_CHECKING:
    from bcd.slides._deepzoom import AnalysisView, DeepZoomViews

router = APIRouter(tags=["slides"])

_views_lock = threading.Lock()
# Outputs of an analysis never change once it is completed, and ids are never reused.
_CACHE_CONTROL = "private, max-age=86400"
_DZI_MEDIA = "application/xml"


def deep_zoom_views(app: Any) -> DeepZoomViews:
    """The app's open analysis views and tile cache, made on first use."""
    views = getattr(app.state, "deep_zoom_views", None)
    if views is None:
        with _views_lock:
            views = getattr(app.state, "deep_zoom_views", None)
            if views is None:
                from bcd.slides._deepzoom import DeepZoomViews

                views = DeepZoomViews()
                app.state.deep_zoom_views = views
    return views


def _view(request: Request, service: Any, analysis_id: str) -> AnalysisView:
    """The view of a completed analysis (``NotFoundError`` / ``ConflictError`` otherwise)."""
    from bcd.slides import AnalysisOptions

    outputs = service.output_path(analysis_id, "probabilities.npy").parent
    options = AnalysisOptions(**service.describe(analysis_id)["options"])
    return deep_zoom_views(request.app).view(analysis_id, outputs.parent, options)


def _answer(data: bytes | str, media_type: str) -> Response:
    return Response(data, media_type=media_type, headers={"Cache-Control": _CACHE_CONTROL})


@router.get(
    "/slides/{analysis_id}/dzi",
    summary="Deep Zoom descriptor of the slide (tiles under dzi_files/)",
    response_class=Response,
)
def slide_dzi(
    analysis_id: str, request: Request, service: SlideServiceDep, _key: ApiKeyDep
) -> Response:
    """The slide's ``.dzi`` XML: level-0 size, 254 px JPEG tiles with 1 px overlap."""
    view = _view(request, service, analysis_id)
    return _answer(view.geometry.xml("jpeg"), _DZI_MEDIA)


@router.get(
    "/slides/{analysis_id}/dzi_files/{level}/{col}_{row}.jpeg",
    summary="One Deep Zoom tile of the slide (JPEG)",
    response_class=Response,
)
def slide_dzi_tile(
    analysis_id: str,
    level: int,
    col: int,
    row: int,
    request: Request,
    service: SlideServiceDep,
    _key: ApiKeyDep,
) -> Response:
    """Tile ``col``, ``row`` of Deep Zoom level ``level`` (``400`` when it does not exist)."""
    view = _view(request, service, analysis_id)
    cache = deep_zoom_views(request.app).cache
    data = cache.get_or_render(
        (analysis_id, "slide", level, col, row), lambda: view.slide_tile(level, col, row)
    )
    return _answer(data, "image/jpeg")


def _layer(layer: str) -> str:
    from bcd.slides._deepzoom import LAYERS

    if layer not in LAYERS:
        raise NotFoundError(f"no layer {layer!r}; layers are: {', '.join(LAYERS)}")
    return layer


@router.get(
    "/slides/{analysis_id}/{layer}.dzi",
    summary="Deep Zoom descriptor of a layer: overlay (heatmap) or truth (ground truth)",
    response_class=Response,
)
def layer_dzi(
    analysis_id: str, layer: str, request: Request, service: SlideServiceDep, _key: ApiKeyDep
) -> Response:
    """The layer's ``.dzi`` XML (PNG tiles, the slide's size); ``truth`` needs ground truth."""
    view = _view(request, service, analysis_id)
    view.layer_cells(_layer(layer), None)  # NotFoundError for truth without ground truth
    return _answer(view.geometry.xml("png"), _DZI_MEDIA)


@router.get(
    "/slides/{analysis_id}/{layer}_files/{level}/{col}_{row}.png",
    summary="One Deep Zoom tile of a layer (PNG with alpha)",
    response_class=Response,
)
def layer_dzi_tile(
    analysis_id: str,
    layer: str,
    level: int,
    col: int,
    row: int,
    request: Request,
    service: SlideServiceDep,
    _key: ApiKeyDep,
    threshold: Annotated[
        float | None,
        Query(ge=0.0, le=1.0, description="Overlay only: hide tiles whose probability is below"),
    ] = None,
) -> Response:
    """Heatmap colours (or truth: red IDC, blue no IDC), transparent off the scored tissue."""
    _layer(layer)
    view = _view(request, service, analysis_id)
    chosen = round(threshold, 4) if threshold is not None and layer == "overlay" else None
    cache = deep_zoom_views(request.app).cache
    data = cache.get_or_render(
        (analysis_id, layer, chosen, level, col, row),
        lambda: view.layer_tile(layer, level, col, row, chosen),
    )
    return _answer(data, "image/png")


@router.get("/slides/{analysis_id}/viewer", summary="Sizes, tile grid and layers for a viewer")
def viewer_facts(
    analysis_id: str, request: Request, service: SlideServiceDep, _key: ApiKeyDep
) -> dict[str, Any]:
    """Level-0 size, Deep Zoom tiling, grid (``cell``: level-0 px per grid cell), layer URLs."""
    return _view(request, service, analysis_id).describe(f"/slides/{analysis_id}")


@router.get(
    "/slides/{analysis_id}/tiles/{row}/{col}.json", summary="The scores of one tile of the grid"
)
def tile_score(
    analysis_id: str,
    row: int,
    col: int,
    request: Request,
    service: SlideServiceDep,
    _key: ApiKeyDep,
) -> dict[str, Any]:
    """Probability (with slide context), the tile's own probability, level-0 box, truth."""
    return _view(request, service, analysis_id).tile_score(row, col)
