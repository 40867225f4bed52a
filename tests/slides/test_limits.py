"""Limits on one analysis: the stride floor and the tile limit, in the library, CLI and REST."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from bcd import config
from bcd.cli.main import build_app, exit_code_for
from bcd.config import Settings
from bcd.errors import BcdError, InvalidInputError, PayloadTooLargeError
from bcd.serving import EndpointSpec, InMemoryEndpointSource, VariantSpec, create_app
from bcd.slides import AnalysisOptions, ArraySlideReader, analyze_slide, open_slide, plan_grid
from bcd.slides._admission import FairTurns, planned_grid
from bcd.slides._analysis import MIN_STRIDE
from bcd.testing.models import write_tiny_model
from tests.slides.conftest import darkness_predict, synthetic_slide


def _png(image: np.ndarray, dpi: float | None = 6350) -> bytes:
    buffer = io.BytesIO()
    extra = {"dpi": (dpi, dpi)} if dpi else {}
    Image.fromarray(image).save(buffer, format="PNG", **extra)
    return buffer.getvalue()


@pytest.mark.parametrize("stride", [1, MIN_STRIDE - 1], ids=["one", "just-below"])
def test_a_stride_below_the_floor_is_refused(stride: int) -> None:
    with pytest.raises(InvalidInputError, match=f"stride {stride} must be between {MIN_STRIDE}"):
        AnalysisOptions(stride=stride).validate()
    assert AnalysisOptions(stride=MIN_STRIDE).validate().stride == MIN_STRIDE


def test_a_grid_over_the_tile_limit_is_refused_before_any_tile_is_scored() -> None:
    reader = ArraySlideReader(synthetic_slide(12, 16))  # a 12x16 grid at stride 50
    calls: list[int] = []

    def predict(tiles: np.ndarray) -> np.ndarray:
        calls.append(len(tiles))
        return darkness_predict(tiles)

    with pytest.raises(PayloadTooLargeError) as refused:
        analyze_slide(reader, predict, AnalysisOptions(max_tiles=191))
    assert "12x16 grid of 192 tiles, over the limit of 191 tiles" in refused.value.message
    assert calls == []
    assert analyze_slide(reader, predict, AnalysisOptions(max_tiles=192)).grid.tile_count == 192


@pytest.mark.parametrize("dpi", [6350, None], ids=["with-resolution", "without"])
def test_planned_grid_from_the_header_matches_the_decoded_slide(
    tmp_path: Path, dpi: float | None
) -> None:
    path = tmp_path / "slide.png"
    path.write_bytes(_png(synthetic_slide(7, 9), dpi=dpi))
    options = AnalysisOptions(stride=20)
    with open_slide(path) as reader:
        decoded = plan_grid(reader, stride=20)
    assert planned_grid(path, options) == decoded
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert planned_grid(broken, options) is None


def test_fair_turns_alternate_between_callers_that_keep_asking() -> None:
    turns = FairTurns()
    order: list[str] = []
    holding = threading.Event()
    small = threading.Thread(target=lambda: _take_turns(turns, "small", 2, order))

    def large_first_turn() -> None:
        holding.set()
        deadline = time.monotonic() + 5
        while not turns._waiting and time.monotonic() < deadline:  # until "small" waits
            time.sleep(0.005)

    large = threading.Thread(target=lambda: _take_turns(turns, "large", 4, order, large_first_turn))
    large.start()
    assert holding.wait(5)
    small.start()
    large.join(5)
    small.join(5)
    # After its first turn the large caller queues behind the small one each time.
    assert order == ["large", "small", "large", "small", "large", "large"]


def _take_turns(
    turns: FairTurns, name: str, count: int, order: list[str], first: object = None
) -> None:
    for index in range(count):
        with turns.turn():
            order.append(name)
            if index == 0 and callable(first):
                first()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    model = write_tiny_model(tmp_path / "model")
    spec = EndpointSpec(
        name="ep",
        status="InService",
        config_name="ep-config",
        version=1,
        variants=(VariantSpec("main", "tiny", model, 1, 1.0),),
    )
    settings = Settings(home=tmp_path / "home", default_endpoint="ep", max_slide_tiles=100)
    app = create_app(settings, source=InMemoryEndpointSource([spec]), poll_interval_s=0.05)
    with TestClient(app, raise_server_exceptions=False) as started:
        assert app.state.router.wait_ready(10)
        yield started


def test_post_slides_refuses_a_small_stride_and_a_grid_over_the_limit(client: TestClient) -> None:
    uploads = Path(client.app.state.settings.home) / "slides" / ".uploads"  # type: ignore[attr-defined]
    small_stride = client.post(
        "/slides", files={"slide": ("a.png", _png(synthetic_slide(8, 8)))}, data={"stride": "1"}
    )
    assert small_stride.status_code == 400
    error = small_stride.json()["error"]
    assert error["code"] == "invalid_input" and f"between {MIN_STRIDE} and" in error["message"]
    too_many = client.post("/slides", files={"slide": ("b.png", _png(synthetic_slide(12, 16)))})
    assert too_many.status_code == 413
    error = too_many.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "192 tiles, over the limit of 100 tiles" in error["message"]
    assert client.get("/slides").json() == {"slides": []}
    assert not list(uploads.glob("*"))
    slides = Path(client.app.state.settings.home) / "slides"  # type: ignore[attr-defined]
    assert [path.name for path in slides.iterdir()] == [".uploads"]
    accepted = client.post("/slides", files={"slide": ("c.png", _png(synthetic_slide(8, 8)))})
    assert accepted.status_code == 202, accepted.text


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args))
    if isinstance(result.exception, BcdError):
        return exit_code_for(result.exception), result.exception.message
    return result.exit_code, result.output


def test_bcd_slide_analyze_refuses_a_small_stride_and_a_grid_over_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = write_tiny_model(tmp_path / "model")
    slide = tmp_path / "slide.png"
    slide.write_bytes(_png(synthetic_slide(12, 16)))
    common = ["slide", "analyze", str(slide), "--model-dir", str(model), "--out"]
    code, output = _run(*common, str(tmp_path / "a"), "--stride", "2")
    assert code == 2 and f"stride 2 must be between {MIN_STRIDE}" in output
    monkeypatch.setenv("BCD_MAX_SLIDE_TILES", "150")
    config.get_settings.cache_clear()
    try:
        code, output = _run(*common, str(tmp_path / "b"))
    finally:
        config.get_settings.cache_clear()
    assert code == 2 and "192 tiles, over the limit of 150 tiles" in " ".join(output.split())
    assert not (tmp_path / "b" / "report.json").exists()
