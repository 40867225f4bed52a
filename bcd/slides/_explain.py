"""Grad-CAM explanations of tile scores, from the torch model kept beside the ONNX one.

Serving scores tiles with ONNX Runtime; an explanation needs gradients, so it
rebuilds the network from the model folder's ``model.json`` + ``model.pt``
(:func:`bcd.algorithms.load_model`) and runs captum's ``LayerGradCam`` on the
last convolutional block (:func:`target_layer`). The map explains the IDC
evidence ``z_IDC - z_noIDC`` (the logit difference that ``P(IDC)`` is a
sigmoid of), keeps only positive evidence, is upsampled to the tile and scaled
to [0, 1] per tile. torch and captum are imported only here, and only when an
explainer is made, so analysing and serving slides never need them.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from bcd.errors import BcdError, ExplanationsUnavailableError
from bcd.slides._render import _INK, colorize, font

if TYPE_CHECKING:
    from torch import nn

    from bcd.slides._analysis import SlideAnalysis
    from bcd.slides.readers import BaseSlideReader

logger = logging.getLogger(__name__)

#: Model pixels → picture pixels of an explanation PNG (a 50 px tile becomes 200 px).
EXPLANATION_SCALE = 4
#: Folder of the top tiles' explanation PNGs inside an analysis's outputs.
EXPLANATIONS_DIR = "explanations"
_KEY_HEIGHT = 34
_MAX_ALPHA = 0.6
# Tiles per gradient pass: bounds memory when --top-k asks for hundreds.
_CHUNK = 64


def explanations_supported() -> str | None:
    """Why Grad-CAM cannot run in this environment, or ``None`` when it can.

    Returns:
        ``None`` when torch and captum import; else a message saying what to install.
    """
    try:
        import captum.attr  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        return (
            f"explanations need torch and captum ({error.name or 'torch'} is not installed); "
            "install them with: pip install 'bcd[train]'"
        )
    return None


def target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM attributes to: the network's last convolutional block.

    Args:
        model: A built-in network (:func:`bcd.algorithms.models.build_model`),
            possibly wrapped in ``UpsampledInput``.

    Returns:
        DeepCNN and SmallCNN: the ReLU after their last convolution; ResNet:
        ``layer4``; EfficientNet-Lite: its last ``features`` stage (the 1x1
        head convolution); an ensemble: its first member's layer; any other
        network: its last ``Conv2d``.

    Raises:
        ExplanationsUnavailableError: If the network has no convolution.
    """
    from torch import nn

    from bcd.algorithms.efficientnet import EfficientNetLite
    from bcd.algorithms.ensemble import EnsembleNet
    from bcd.algorithms.models import DeepCNN, SmallCNN, UpsampledInput

    if isinstance(model, EnsembleNet):
        # The first member's evidence, as it reaches the ensemble's margin.
        return target_layer(model.members[0])
    network = model.network if isinstance(model, UpsampledInput) else model
    if isinstance(network, DeepCNN | SmallCNN):
        relus = [layer for layer in network.features if isinstance(layer, nn.ReLU)]
        return relus[-1]
    if isinstance(network, EfficientNetLite):
        return network.features[-1]
    layer4 = getattr(network, "layer4", None)
    if isinstance(layer4, nn.Module):
        return layer4
    convolutions = [layer for layer in network.modules() if isinstance(layer, nn.Conv2d)]
    if not convolutions:
        raise ExplanationsUnavailableError(
            f"{type(network).__name__} has no convolution for Grad-CAM to attribute to"
        )
    return convolutions[-1]


class TileExplainer:
    """Grad-CAM heat maps of the IDC evidence in tiles, for one torch model.

    Args:
        model: The network (returns ``(N, 2)`` logits from normalised input).
        scale: Pixel scale of ``model.json``'s ``input`` (255).
        mean: Per-channel mean on that scale divided by ``scale``.
        std: Per-channel standard deviation, likewise.
        layer: The layer to attribute to (default :func:`target_layer`).
        stain: The model's stain normalisation (``input.stain_normalization``),
            applied to the uint8 tiles before scaling, as serving applies it.

    Thread-safe: one lock serialises the gradient passes (captum's hooks are
    per module).
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float,
        mean: list[float],
        std: list[float],
        layer: nn.Module | None = None,
        stain: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        from captum.attr import LayerGradCam

        self.model = _IdcEvidence(model.eval())
        self.layer = layer if layer is not None else target_layer(model)
        self.layer_name = _module_name(model, self.layer)
        self._cam = LayerGradCam(self.model, self.layer)
        self._scale = float(scale)
        self._mean = np.asarray(mean, dtype=np.float32)
        self._std = np.asarray(std, dtype=np.float32)
        self._stain = stain
        self._lock = threading.Lock()

    def heatmaps(self, tiles: np.ndarray) -> np.ndarray:
        """Grad-CAM of the IDC evidence in each tile.

        Args:
            tiles: uint8 ``(N, H, W, 3)`` RGB tiles (as the model sees them).

        Returns:
            float32 ``(N, H, W)`` in [0, 1]: each tile's positive evidence,
            divided by its maximum (all zeros where the tile holds none).
        """
        import torch
        from captum.attr import LayerAttribution

        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[-1] != 3 or len(tiles) == 0:
            raise ValueError(f"tiles must be (N, H, W, 3) with N >= 1, got {tiles.shape}")
        if self._stain is not None:
            tiles = self._stain(tiles)  # onto the reference stain, as serving does
        images = (tiles.astype(np.float32) / self._scale - self._mean) / self._std
        batch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        with self._lock:
            attributions = self._cam.attribute(batch, target=0, relu_attributions=True)
        upsampled = LayerAttribution.interpolate(
            attributions.detach(), tuple(tiles.shape[1:3]), interpolate_mode="bilinear"
        )  # (N, 1, H, W)
        heat = upsampled[:, 0].clamp(min=0).numpy().astype(np.float32)
        peaks = heat.reshape(len(heat), -1).max(axis=1)
        scale = np.where(peaks > 0, 1.0 / np.maximum(peaks, 1e-12), 0.0).astype(np.float32)
        return heat * scale[:, None, None]


class _IdcEvidence:
    """Wraps a 2-logit network to return ``z_IDC - z_noIDC`` as ``(N, 1)``."""

    def __init__(self, model: nn.Module) -> None:
        self.network = model

    def __call__(self, images: Any) -> Any:
        logits = self.network(images)  # (N, 2)
        return logits[:, 1:] - logits[:, :1]  # (N, 1)


def _module_name(model: nn.Module, layer: nn.Module) -> str:
    return next((name for name, module in model.named_modules() if module is layer), "")


def load_explainer(model_dir: str | Path) -> TileExplainer:
    """A :class:`TileExplainer` for a model folder (``model.json`` + ``model.pt``).

    Args:
        model_dir: The model's folder (registered models and training jobs keep
            ``model.pt`` beside ``model.onnx``; so does the bundled model).

    Returns:
        The explainer.

    Raises:
        ExplanationsUnavailableError: torch or captum is not installed, the
            folder has no ``model.pt``, or the weights do not rebuild a
            built-in network (a ``script`` model, say).
    """
    missing = explanations_supported()
    if missing is not None:
        raise ExplanationsUnavailableError(missing)
    folder = Path(model_dir)
    if not (folder / "model.pt").is_file():
        raise ExplanationsUnavailableError(
            f"model {folder.name!r} has no torch weights (model.pt) beside its ONNX graph; "
            "Grad-CAM needs them (training jobs write model.pt into the model folder)"
        )
    from bcd.algorithms import load_model
    from bcd.stain import StainNormalizer

    try:
        description = json.loads((folder / "model.json").read_text())
        spec = description["input"]
        stain = StainNormalizer.from_json(spec.get("stain_normalization"))
        model = load_model(folder)
    except (BcdError, KeyError, OSError, ValueError, RuntimeError) as error:
        raise ExplanationsUnavailableError(
            f"model {folder.name!r} cannot be rebuilt in torch for Grad-CAM: {error}"
        ) from None
    return TileExplainer(model, spec["scale"], spec["mean"], spec["std"], stain=stain)


def blend(tile: np.ndarray, heat: np.ndarray, size: int) -> Image.Image:
    """A tile enlarged to ``size`` px with its heat map blended on it.

    Colour follows the heatmap scale (blue → yellow → red); opacity grows with
    the heat, so tissue without evidence stays visible as it is.

    Args:
        tile: uint8 ``(H, W, 3)``.
        heat: float ``(H, W)`` in [0, 1].
        size: Edge of the picture in pixels.

    Returns:
        An RGB picture ``size`` x ``size``.
    """
    picture = np.asarray(
        Image.fromarray(np.ascontiguousarray(tile)).resize((size, size), Image.Resampling.NEAREST),
        dtype=np.float32,
    )
    smooth = np.asarray(
        Image.fromarray(np.asarray(heat, dtype=np.float32), "F").resize(
            (size, size), Image.Resampling.BILINEAR
        )
    ).clip(0.0, 1.0)
    alpha = (_MAX_ALPHA * smooth)[..., None]
    mixed = picture * (1 - alpha) + colorize(smooth).astype(np.float32) * alpha
    return Image.fromarray(mixed.round().astype(np.uint8), "RGB")


def colour_key(width: int, height: int = _KEY_HEIGHT) -> Image.Image:
    """The colour key of an explanation: a low → high Grad-CAM evidence bar."""
    key = Image.new("RGB", (width, height), "white")
    bar = colorize(np.linspace(0.0, 1.0, width - 16, dtype=np.float32))[None].repeat(8, axis=0)
    key.paste(Image.fromarray(bar, "RGB"), (8, 4))
    draw = ImageDraw.Draw(key)
    draw.text((8, 15), "low", fill=_INK, font=font(12))
    draw.text((width // 2, 15), "Grad-CAM", fill=_INK, font=font(12), anchor="ma")
    draw.text((width - 8, 15), "high", fill=_INK, font=font(12), anchor="ra")
    return key


def explanation_image(
    tile: np.ndarray, heat: np.ndarray, scale: int = EXPLANATION_SCALE
) -> Image.Image:
    """The picture the viewer and the output folder show for one tile.

    Args:
        tile: uint8 ``(H, W, 3)``, as the model saw it.
        heat: Its Grad-CAM map, float ``(H, W)`` in [0, 1].
        scale: Enlargement of the tile.

    Returns:
        RGB: the enlarged tile with the heat blended on it, over a colour key.
    """
    size = tile.shape[1] * scale
    picture = Image.new("RGB", (size, size + _KEY_HEIGHT), "white")
    picture.paste(blend(tile, heat, size), (0, 0))
    picture.paste(colour_key(size), (0, size))
    return picture


def _write_bytes(data: bytes, handle: IO[bytes]) -> None:
    handle.write(data)


def explanation_file(row: int, col: int) -> str:
    """Where the explanation of tile ``(row, col)`` lies in an analysis's outputs."""
    return f"{EXPLANATIONS_DIR}/tile_r{row}_c{col}.png"


def explain_top_tiles(
    explainer: TileExplainer,
    reader: BaseSlideReader,
    analysis: SlideAnalysis,
    report: dict[str, Any],
    out_dir: str | Path,
) -> list[Image.Image]:
    """Explain the report's top tiles: write their PNGs and list them in the report.

    Writes ``explanations/tile_r{row}_c{col}.png`` (:func:`explanation_image`)
    into ``out_dir`` for every entry of ``report["top_tiles"]`` and sets
    ``report["explanations"]`` (method, layer, target and the files, by rank).

    Args:
        explainer: The model's explainer (:func:`load_explainer`).
        reader: The open slide.
        analysis: Its analysis (for the tile grid).
        report: Its report (:func:`bcd.slides.build_report`); updated in place.
        out_dir: The analysis's output folder.

    Returns:
        The top tiles with their heat blended on (100 px, most suspicious
        first), for the report page.
    """
    from bcd.slides._grid import read_tile
    from bcd.slides._outputs import atomic_write
    from bcd.slides._png import encode_png

    entries = report["top_tiles"]
    files: list[dict[str, Any]] = []
    panel: list[Image.Image] = []
    if entries:
        tiles = np.stack(
            [read_tile(reader, analysis.grid, entry["row"], entry["col"]) for entry in entries]
        )
        heat = np.concatenate(
            [
                explainer.heatmaps(tiles[start : start + _CHUNK])
                for start in range(0, len(tiles), _CHUNK)
            ]
        )
        for entry, tile, tile_heat in zip(entries, tiles, heat, strict=True):
            name = explanation_file(entry["row"], entry["col"])
            data = encode_png(explanation_image(tile, tile_heat))
            atomic_write(Path(out_dir) / name, functools.partial(_write_bytes, data))
            files.append(
                {"rank": entry["rank"], "row": entry["row"], "col": entry["col"], "file": name}
            )
            panel.append(blend(tile, tile_heat, 100))
    report["explanations"] = {
        "method": "Grad-CAM (captum LayerGradCam)",
        "layer": explainer.layer_name,
        "target": "IDC evidence: IDC logit minus no-IDC logit, positive part",
        "files": files,
    }
    return panel
