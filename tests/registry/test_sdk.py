"""SDK: Model(...).deploy() -> Predictor, predict() on a real tiny ONNX model, clean-up."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd import registry
from bcd.config import Settings
from bcd.errors import ConflictError, InvalidInputError, JobFailedError, NotFoundError
from bcd.sdk import Model, Predictor
from bcd.sdk._predictor import encode_request
from bcd.testing.models import write_tiny_model
from tests.registry.helpers import variant


@pytest.fixture(autouse=True)
def _close_runtimes() -> Iterator[None]:
    yield
    from bcd.serving import close_local_services

    close_local_services()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "tiny")


@pytest.fixture
def patch_png(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "patch.png"
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(path)
    return path


def _check_prediction(row: dict[str, object]) -> None:
    probabilities = row["probabilities"]
    assert isinstance(probabilities, list) and sum(probabilities) == pytest.approx(1.0)
    assert row["predicted_class"] == int(np.argmax(probabilities))
    assert row["cancer_detected"] is (row["predicted_class"] == 1)
    expected = "Cancer detected" if row["cancer_detected"] else "Cancer not detected"
    assert row["message"] == expected


def test_deploy_and_predict_every_input_kind(
    tiny: Path, patch_png: Path, settings: Settings
) -> None:
    predictor = Model(str(tiny), name="tiny", settings=settings).deploy(endpoint_name="ep")
    assert isinstance(predictor, Predictor)
    described = registry.describe_endpoint("ep", settings=settings)
    assert described["EndpointStatus"] == "InService"
    pixels = np.asarray(Image.open(patch_png))
    single = predictor.predict(patch_png)
    assert (single["model"], single["variant"]) == ("tiny", "AllTraffic")
    _check_prediction(single["predictions"][0])
    for image in (str(patch_png), patch_png.read_bytes(), pixels, pixels.tolist()):
        answer = predictor.predict(image)
        assert answer["predictions"][0]["probabilities"] == pytest.approx(
            single["predictions"][0]["probabilities"], abs=1e-6
        )
    for batch in ([patch_png, patch_png.read_bytes()], [pixels, pixels[:40, :40]]):
        answer = predictor.predict(batch)
        assert len(answer["predictions"]) == 2
        for row in answer["predictions"]:
            _check_prediction(row)


def test_real_patches_from_both_classes(tiny: Path, settings: Settings, shared_data: Path) -> None:
    patient = sorted(p for p in shared_data.iterdir() if p.is_dir())[0]
    patches = [sorted((patient / label).glob("*.png"))[0] for label in ("0", "1")]
    predictor = Model(str(tiny), settings=settings).deploy(endpoint_name="real")
    answer = predictor.predict(patches)
    assert len(answer["predictions"]) == 2
    for row in answer["predictions"]:
        _check_prediction(row)


def test_target_variant_pins_traffic(tmp_path: Path, patch_png: Path, settings: Settings) -> None:
    for name, bias in (("always-no", (20.0, 0.0)), ("always-yes", (0.0, 20.0))):
        write_tiny_model(tmp_path / name, bias=bias)
        registry.create_model(name, model_data=str(tmp_path / name), settings=settings)
    registry.create_endpoint_config(
        "ab",
        [variant("no", "always-no", 0.5), variant("yes", "always-yes", 0.5)],
        settings=settings,
    )
    registry.create_endpoint("ab", "ab", settings=settings)
    predictor = Predictor("ab", settings=settings)
    for pinned, detected in (("no", False), ("yes", True)):
        answer = predictor.predict(patch_png, target_variant=pinned)
        assert answer["variant"] == pinned
        assert answer["predictions"][0]["cancer_detected"] is detected


def test_deploy_to_an_existing_endpoint(tiny: Path, tmp_path: Path, settings: Settings) -> None:
    Model(str(tiny), name="first", settings=settings).deploy(endpoint_name="ep")
    second = write_tiny_model(tmp_path / "second", bias=(0.0, 20.0))
    with pytest.raises(ConflictError, match="update_endpoint=True"):
        Model(str(second), name="second", settings=settings).deploy(endpoint_name="ep")
    assert [m["ModelName"] for m in registry.list_models(settings=settings)] == ["first"]
    Model(str(second), name="second", settings=settings).deploy(
        endpoint_name="ep", update_endpoint=True
    )
    described = registry.describe_endpoint("ep", settings=settings)
    assert described["Version"] == 2
    assert described["ProductionVariants"][0]["ModelName"] == "second"
    assert described["EndpointConfigName"].startswith("ep-")


def test_deploy_with_wait_raises_when_the_endpoint_fails(
    tiny: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Model(str(tiny), name="tiny", settings=settings)
    model.create()
    (tiny / "model.onnx").write_bytes(b"swapped after registration")
    with pytest.raises(JobFailedError, match="changed since"):
        model.deploy(endpoint_name="ep")
    assert registry.describe_endpoint("ep", settings=settings)["EndpointStatus"] == "Failed"


def test_delete_endpoint_and_model_leave_nothing(
    tiny: Path, patch_png: Path, settings: Settings
) -> None:
    predictor = Model(str(tiny), name="tiny", settings=settings).deploy()
    assert predictor.endpoint_name == "tiny"
    predictor.delete_endpoint()
    predictor.delete_model()
    assert registry.endpoint_summaries(settings=settings) == []
    assert registry.list_endpoint_configs(settings=settings) == []
    assert registry.list_models(settings=settings) == []
    with pytest.raises(NotFoundError):
        predictor.predict(patch_png)


def test_generated_names_are_valid_and_unique(tiny: Path, settings: Settings) -> None:
    first, second = Model(str(tiny), settings=settings), Model(str(tiny), settings=settings)
    assert first.name != second.name and first.name.startswith("bcd-model-")
    assert len(first.name) <= 63


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-source"),
        pytest.param({"model_data": "x", "training_job": "j"}, id="two-sources"),
        pytest.param({"model_data": "x", "name": "bad name"}, id="bad-name"),
    ],
)
def test_bad_model_arguments(kwargs: dict[str, str], settings: Settings) -> None:
    with pytest.raises(InvalidInputError):
        Model(settings=settings, **kwargs)


@pytest.mark.parametrize(
    ("suffix", "content_type"),
    [
        (".png", "image/png"),
        (".JPG", "image/jpeg"),
        (".tiff", "image/tiff"),
        (".bin", "application/x-image"),
    ],
)
def test_encode_path_by_suffix(tmp_path: Path, suffix: str, content_type: str) -> None:
    path = tmp_path / f"patch{suffix}"
    path.write_bytes(b"data")
    assert encode_request(path) == (b"data", content_type)


def test_encode_arrays_and_lists() -> None:
    pixels = np.zeros((50, 50, 3), dtype=np.uint8)
    body, content_type = encode_request(pixels)
    assert content_type == "application/x-npy"
    assert np.array_equal(np.load(io.BytesIO(body), allow_pickle=False), pixels)
    body, content_type = encode_request([pixels, pixels])
    assert np.load(io.BytesIO(body)).shape == (2, 50, 50, 3)
    body, content_type = encode_request([pixels, pixels[:10]])
    assert content_type == "application/json"
    assert len(json.loads(body)["instances"]) == 2
    body, content_type = encode_request([b"one", b"two"])
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=")[1].encode()
    assert body.count(b"--" + boundary) == 3 and b"one" in body and b"two" in body


@pytest.mark.parametrize(
    ("image", "error"),
    [
        pytest.param([], InvalidInputError, id="empty-list"),
        pytest.param(3.5, InvalidInputError, id="number"),
        pytest.param(["/no/such/file.png"], NotFoundError, id="missing-file"),
        pytest.param([["a", "b"]], InvalidInputError, id="strings"),
        pytest.param(np.array([object()]), InvalidInputError, id="object-array"),
    ],
)
def test_encode_refuses(image: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_request(image)
