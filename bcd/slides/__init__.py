"""Whole-slide analysis: read a slide, tile its tissue, score every tile, map IDC.

Layers, bottom up: :mod:`bcd.slides.readers` (formats behind
:func:`open_slide`), tiling and tissue masks, :func:`analyze_slide` (any
``predict`` callable: the serving runtime's, or a numpy function in tests),
then reports and pictures, and :func:`reassemble_patient` to rebuild a
patient's slide from the dataset's patches. The library never imports the
serving layer; :class:`SlideAnalysisService` runs analyses in the background
for the REST API.
"""

from __future__ import annotations

from bcd.slides._analysis import AnalysisOptions, Predict, Progress, SlideAnalysis, analyze_slide
from bcd.slides._explain import (
    TileExplainer,
    explanation_image,
    explanations_supported,
    load_explainer,
    target_layer,
)
from bcd.slides._grid import MODEL_MPP, TILE_SIZE, TileGrid, plan_grid, read_tile
from bcd.slides._metrics import binary_metrics, roc_auc
from bcd.slides._outputs import OUTPUT_FILES, tiles_csv, write_outputs
from bcd.slides._patches import (
    ReassembledSlide,
    load_truth,
    reassemble_patient,
    write_reassembled,
)
from bcd.slides._pipeline import analyze_file, file_facts
from bcd.slides._png import encode_png
from bcd.slides._regions import label_regions, largest_region, regions_geojson, top_tiles
from bcd.slides._render import colorize, comparison_image, heatmap_image
from bcd.slides._service import (
    PredictorFactory,
    SlideAnalysisService,
    recover_interrupted_analyses,
)
from bcd.slides._summary import build_report, truth_for_grid, truth_metrics
from bcd.slides._tissue import otsu_threshold, saturation, tissue_mask, tissue_threshold
from bcd.slides.readers import (
    ArraySlideReader,
    BaseSlideReader,
    OpenSlideReader,
    PillowSlideReader,
    TiffSlideReader,
    open_slide,
)

__all__ = [
    "MODEL_MPP",
    "OUTPUT_FILES",
    "TILE_SIZE",
    "AnalysisOptions",
    "ArraySlideReader",
    "BaseSlideReader",
    "OpenSlideReader",
    "PillowSlideReader",
    "Predict",
    "PredictorFactory",
    "Progress",
    "ReassembledSlide",
    "SlideAnalysis",
    "SlideAnalysisService",
    "TiffSlideReader",
    "TileExplainer",
    "TileGrid",
    "analyze_file",
    "analyze_slide",
    "binary_metrics",
    "build_report",
    "colorize",
    "comparison_image",
    "encode_png",
    "explanation_image",
    "explanations_supported",
    "file_facts",
    "heatmap_image",
    "label_regions",
    "largest_region",
    "load_explainer",
    "load_truth",
    "open_slide",
    "otsu_threshold",
    "plan_grid",
    "read_tile",
    "reassemble_patient",
    "recover_interrupted_analyses",
    "regions_geojson",
    "roc_auc",
    "saturation",
    "target_layer",
    "tiles_csv",
    "tissue_mask",
    "tissue_threshold",
    "top_tiles",
    "truth_for_grid",
    "truth_metrics",
    "write_outputs",
    "write_reassembled",
]
