"""Grad-CAM explanations: the maps are real, the bundled torch model matches its ONNX
graph, and the report, the REST route and the CLI show them (or say why not)."""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from bcd.bundled import MODEL_DIR
from bcd.cli.main import build_app, exit_code_for
from bcd.config import Settings
from bcd.errors import BcdError, ExplanationsUnavailableError
from bcd.serving import EndpointSpec, InMemoryEndpointSource, VariantSpec, create_app
from bcd.slides import analyze_file
from bcd.slides._explain import (
    EXPLANATION_SCALE,
    TileExplainer,
    explanations_supported,
    load_explainer,
    target_layer,
)
from bcd.slides._page import render_page
from bcd.testing.models import write_tiny_model
from tests.slides.conftest import darkness_predict, synthetic_slide

KEYED_SIZE = (50 * EXPLANATION_SCALE, 50 * EXPLANATION_SCALE + 34)


class LeftHalfModel(nn.Module):
    """Sees only the left half of a tile: the right half is zeroed before the first conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
        self.head = nn.Linear(8, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(images)
        mask[..., : images.shape[-1] // 2] = 1.0
        features = torch.relu(self.conv(images * mask))  # (N, 8, H, W), zero on the right
        return self.head(features.mean(dim=(2, 3)))  # (N, 2)


class DarknessModel(nn.Module):
    """IDC evidence = how dark a tile's pixels are (``sign`` -1: darkness argues against IDC)."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, kernel_size=3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(-1.0 / 27)
            self.conv.bias.fill_(0.5)
        self.relu = nn.ReLU()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.0], [4.0 * sign]]))
            self.head.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dark = self.relu(self.conv(images))  # (N, 1, H, W): > 0 where darker than mid-grey
        return self.head(dark.mean(dim=(2, 3)))  # (N, 2)


def _explainer(model: nn.Module, layer: nn.Module | None = None) -> TileExplainer:
    return TileExplainer(model, 255.0, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], layer=layer)


def _darkness_explainer(sign: float = 1.0) -> TileExplainer:
    model = DarknessModel(sign)
    return _explainer(model, layer=model.relu)  # after the ReLU, as for the built-in CNNs


def _dark_square_tile() -> np.ndarray:
    tile = np.full((50, 50, 3), 240, dtype=np.uint8)
    tile[5:20, 5:20] = 40
    return tile


def test_gradcam_of_a_left_half_model_lies_on_the_left_half() -> None:
    tiles = np.random.default_rng(0).integers(0, 256, size=(6, 50, 50, 3), dtype=np.uint8)
    heat = _explainer(LeftHalfModel()).heatmaps(tiles)
    assert heat.shape == (6, 50, 50) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and np.allclose(heat.max(axis=(1, 2)), 1.0)
    left = heat[:, :, :25].sum(axis=(1, 2)) / heat.sum(axis=(1, 2))
    assert (left > 0.95).all(), left


def test_gradcam_follows_the_evidence_in_the_tile() -> None:
    tile = _dark_square_tile()
    heat = _darkness_explainer().heatmaps(tile[None])[0]
    inside = heat[4:21, 4:21].sum() / heat.sum()
    assert inside > 0.9, inside
    peak_row, peak_col = np.unravel_index(np.argmax(heat), heat.shape)
    assert 5 <= peak_row < 20 and 5 <= peak_col < 20
    # The same darkness arguing against IDC is no IDC evidence anywhere.
    against = _darkness_explainer(sign=-1.0).heatmaps(tile[None])[0]
    assert not against.any()


def test_gradcam_sees_the_tiles_after_the_models_stain_step() -> None:
    # A stain step that darkens the top-left square: the evidence must follow it.
    seen: list[tuple[int, ...]] = []

    def stain(tiles: np.ndarray) -> np.ndarray:
        seen.append(tiles.shape)
        out = tiles.copy()
        out[:, 30:45, 30:45] = 40
        return out

    model = DarknessModel()
    explainer = TileExplainer(
        model, 255.0, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], layer=model.relu, stain=stain
    )
    heat = explainer.heatmaps(np.full((2, 50, 50, 3), 240, dtype=np.uint8))
    assert seen == [(2, 50, 50, 3)]
    inside = heat[:, 29:46, 29:46].sum() / heat.sum()
    assert inside > 0.9, inside


def _conv_nets() -> list[Any]:
    from bcd.algorithms.efficientnet import EfficientNetLite
    from bcd.algorithms.models import DeepCNN, SmallCNN, UpsampledInput, build_resnet

    deep = DeepCNN()
    small = SmallCNN()
    resnet = build_resnet(18)
    efficient = EfficientNetLite("efficientnet-lite0")
    return [
        pytest.param(deep, deep.features[-2], id="deep-cnn"),
        pytest.param(small, small.features[4], id="small-cnn"),
        pytest.param(resnet, resnet.layer4, id="resnet-layer4"),
        pytest.param(efficient, efficient.features[-1], id="efficientnet-last-stage"),
        pytest.param(UpsampledInput(deep, (64, 64)), deep.features[-2], id="upsampled"),
        pytest.param(LeftHalfModel(), None, id="other-last-conv"),
    ]


@pytest.mark.parametrize(("model", "expected"), _conv_nets())
def test_target_layer_is_the_last_conv_block(model: nn.Module, expected: nn.Module) -> None:
    layer = target_layer(model)
    if expected is None:
        assert layer is model.conv
    else:
        assert layer is expected
    if not isinstance(model, LeftHalfModel):
        heat = _explainer(model).heatmaps(np.full((2, 50, 50, 3), 128, np.uint8))
        assert heat.shape == (2, 50, 50) and np.isfinite(heat).all()


def test_target_layer_refuses_a_network_without_convolutions() -> None:
    with pytest.raises(ExplanationsUnavailableError, match="no convolution"):
        target_layer(nn.Sequential(nn.Flatten(), nn.Linear(7500, 2)))


def _real_patches(shared_data: Path, count: int = 32) -> np.ndarray:
    paths = [
        path
        for patient in sorted(shared_data.iterdir())[:8]
        for path in sorted(patient.glob("[01]/*.png"))[:4]
    ]
    images = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    return np.stack([image for image in images if image.shape == (50, 50, 3)][:count])


def test_bundled_model_pt_matches_the_bundled_onnx(shared_data: Path) -> None:
    import onnxruntime

    from bcd.algorithms import load_model

    patches = _real_patches(shared_data)
    spec = json.loads((MODEL_DIR / "model.json").read_text())["input"]
    images = (patches.astype(np.float32) / spec["scale"] - spec["mean"]) / spec["std"]
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    session = onnxruntime.InferenceSession(
        str(MODEL_DIR / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(None, {"images": images})
    with torch.no_grad():
        actual = load_model(MODEL_DIR)(torch.from_numpy(images)).numpy()
    assert len(patches) >= 16
    assert np.abs(actual - expected).max() < 1e-4
    explainer = load_explainer(MODEL_DIR)
    assert explainer.layer_name == "features.17"  # the ReLU after the fifth conv
    assert explainer.heatmaps(patches[:4]).shape == (4, 50, 50)


def test_load_explainer_says_why_it_cannot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_only = write_tiny_model(tmp_path / "tiny")
    with pytest.raises(ExplanationsUnavailableError, match=r"no torch weights \(model.pt\)"):
        load_explainer(onnx_only)
    broken = tmp_path / "broken"
    shutil.copytree(MODEL_DIR, broken)
    (broken / "model.pt").write_bytes(b"not a state dict")
    with pytest.raises(ExplanationsUnavailableError, match="cannot be rebuilt in torch"):
        load_explainer(broken)
    assert explanations_supported() is None
    monkeypatch.setitem(sys.modules, "torch", None)
    assert "torch" in (explanations_supported() or "")
    with pytest.raises(ExplanationsUnavailableError, match="pip install 'bcd\\[train\\]'"):
        load_explainer(MODEL_DIR)


def _slide_png(path: Path) -> Path:
    Image.fromarray(synthetic_slide()).save(path, dpi=(6350, 6350))
    return path


def test_report_lists_and_shows_the_top_tiles_explanations(tmp_path: Path) -> None:
    slide = _slide_png(tmp_path / "slide.png")
    from bcd.slides import AnalysisOptions

    options = AnalysisOptions(top_k=5)
    plain = analyze_file(slide, darkness_predict, tmp_path / "plain", options=options)
    assert "explanations" not in plain and not (tmp_path / "plain" / "explanations").exists()
    out = tmp_path / "explained"
    report = analyze_file(
        slide, darkness_predict, out, options=options, explainer=_darkness_explainer()
    )
    explained = report["explanations"]
    assert explained["method"].startswith("Grad-CAM") and explained["layer"] == "relu"
    files = explained["files"]
    assert [entry["rank"] for entry in files] == [1, 2, 3, 4, 5]
    assert [(e["row"], e["col"]) for e in files] == [
        (e["row"], e["col"]) for e in report["top_tiles"]
    ]
    for entry in files:
        assert entry["file"] == f"explanations/tile_r{entry['row']}_c{entry['col']}.png"
        assert Image.open(out / entry["file"]).size == KEYED_SIZE
    assert json.loads((out / "report.json").read_text())["explanations"] == explained
    # The page gains a Grad-CAM row under the top tiles.
    page = np.asarray(Image.open(out / "report.png").convert("L"))
    assert page.shape == np.asarray(Image.open(tmp_path / "plain" / "report.png")).shape[:2]
    tiles = [np.full((50, 50, 3), 200, np.uint8)] * 2
    heatmap = Image.new("RGB", (400, 300), "white")
    bare = np.asarray(render_page(report, heatmap, tiles))
    marked = np.asarray(
        render_page(report, heatmap, tiles, explanations=[Image.new("RGB", (100, 100), "red")])
    )
    changed = np.flatnonzero((bare != marked).any(axis=(1, 2)))
    assert changed.size and (marked[changed] == (255, 0, 0)).all(axis=-1).any()


# -- REST ------------------------------------------------------------------


def _client(tmp_path: Path, model_dir: Path) -> TestClient:
    spec = EndpointSpec(
        name="ep",
        status="InService",
        config_name="ep-config",
        version=1,
        variants=(VariantSpec("main", "m", model_dir, 1, 1.0),),
    )
    settings = Settings(home=tmp_path / "home", default_endpoint="ep")
    app = create_app(settings, source=InMemoryEndpointSource([spec]), poll_interval_s=0.05)
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    assert app.state.router.wait_ready(10)
    return client


def _analysed(client: TestClient) -> str:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_slide()).save(buffer, format="PNG", dpi=(6350, 6350))
    answer = client.post("/slides", files={"slide": ("case.png", buffer.getvalue(), "image/png")})
    assert answer.status_code == 202, answer.text
    analysis_id = answer.json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/slides/{analysis_id}").json()["status"] == "InProgress":
        assert time.monotonic() < deadline, "analysis did not finish"
        time.sleep(0.1)
    return analysis_id


@pytest.fixture
def bundled_client(tmp_path: Path) -> Iterator[TestClient]:
    client = _client(tmp_path, MODEL_DIR)
    yield client
    client.__exit__(None, None, None)


def test_explanation_route(bundled_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    analysis_id = _analysed(bundled_client)
    answer = bundled_client.get(f"/slides/{analysis_id}/explanations/5/6.png")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(answer.content))
    assert picture.size == KEYED_SIZE
    again = bundled_client.get(f"/slides/{analysis_id}/explanations/5/6.png")
    assert again.content == answer.content  # deterministic, and the explainer is kept
    for path, reason in [
        (f"/slides/{analysis_id}/explanations/50/6.png", "outside the 12x16 grid"),
        (f"/slides/{analysis_id}/explanations/0/0.png", "off tissue"),  # glass
        (f"/slides/{'0' * 32}/explanations/5/6.png", "no slide analysis"),
    ]:
        refused = bundled_client.get(path)
        assert refused.status_code == 404, path
        assert reason in refused.json()["error"]["message"]
    monkeypatch.setitem(sys.modules, "torch", None)
    unavailable = bundled_client.get(f"/slides/{analysis_id}/explanations/5/6.png")
    assert unavailable.status_code == 409
    assert unavailable.json()["error"]["code"] == "explanations_unavailable"


def test_reports_of_uploaded_slides_show_their_top_tiles_explained(
    bundled_client: TestClient,
) -> None:
    analysis_id = _analysed(bundled_client)
    report = bundled_client.get(f"/slides/{analysis_id}").json()["report"]
    entries = report["explanations"]["files"]
    assert entries and all(e["file"].startswith("explanations/tile_r") for e in entries)
    assert "model_dir" not in report["model"]  # no local folder names in shared reports
    top = entries[0]
    picture = bundled_client.get(
        f"/slides/{analysis_id}/explanations/{top['row']}/{top['col']}.png"
    )
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


def test_explanation_route_without_model_pt(tmp_path: Path) -> None:
    client = _client(tmp_path, write_tiny_model(tmp_path / "tiny"))
    try:
        analysis_id = _analysed(client)
        answer = client.get(f"/slides/{analysis_id}/explanations/5/6.png")
        assert answer.status_code == 409
        error = answer.json()["error"]
        assert error["code"] == "explanations_unavailable" and "model.pt" in error["message"]
    finally:
        client.__exit__(None, None, None)


# -- CLI -------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args))
    if isinstance(result.exception, BcdError):
        return exit_code_for(result.exception), result.exception.message
    return result.exit_code, result.output


def test_cli_explains_by_default_and_on_request(tmp_path: Path) -> None:
    slide = str(_slide_png(tmp_path / "slide.png"))
    common = ("slide", "analyze", slide, "--top-k", "3")
    code, output = _run(*common, "--model-dir", str(MODEL_DIR), "--out", str(tmp_path / "a"))
    assert code == 0, output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    files = [entry["file"] for entry in report["explanations"]["files"]]
    assert len(files) == 3 and all((tmp_path / "a" / name).is_file() for name in files)
    off = tmp_path / "off"
    code, output = _run(*common, "--model-dir", str(MODEL_DIR), "--out", str(off), "--no-explain")
    assert code == 0, output
    assert "explanations" not in json.loads((off / "report.json").read_text())
    assert not (off / "explanations").exists()
    tiny = str(write_tiny_model(tmp_path / "tiny"))
    code, output = _run(*common, "--model-dir", tiny, "--out", str(tmp_path / "t"))
    assert code == 0 and "no explanations" in output and "model.pt" in output
    code, output = _run(*common, "--model-dir", tiny, "--out", str(tmp_path / "u"), "--explain")
    assert code == 5 and "no torch weights (model.pt)" in output
