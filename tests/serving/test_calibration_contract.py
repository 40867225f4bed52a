"""model.json calibration fields in serving: logit bias and decision threshold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bcd.errors import InvalidInputError
from bcd.serving import InMemoryEndpointSource, ModelRuntime, Preprocessor, load_model_spec
from bcd.serving._runtime import softmax
from bcd.testing.models import write_tiny_model
from tests.serving.conftest import endpoint_spec

rng = np.random.default_rng(11)


def test_runtime_applies_temperature_then_logit_bias(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = write_tiny_model(tmp_path / "m", temperature=2.0, extra={"logit_bias": -1.5})
    patches = [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(6)]
    runtime = ModelRuntime(model, threads=1)
    try:
        probabilities = runtime.predict(patches)
    finally:
        runtime.close()
    session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": Preprocessor(load_model_spec(model))(patches)})
    margins = (logits[:, 1] - logits[:, 0]).astype(np.float64)
    expected = 1 / (1 + np.exp(-(margins / 2.0 - 1.5)))
    np.testing.assert_allclose(probabilities[:, 1], expected, rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(softmax(logits, 2.0, -1.5), probabilities, rtol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"decision_threshold": 0}, "decision_threshold"),
        ({"decision_threshold": 1.0}, "decision_threshold"),
        ({"decision_threshold": "0.4"}, "decision_threshold"),
        ({"decision_threshold": True}, "decision_threshold"),
        ({"logit_bias": "high"}, "logit_bias"),
        ({"logit_bias": 1e9}, "logit_bias"),
        ({"slide_context": {"radius": 2, "weights": [1.0], "bias": 0.0}}, "slide_context"),
        ({"slide_context": "on"}, "slide_context"),
    ],
)
def test_bad_calibration_fields_fail_at_load(tmp_path: Path, extra: dict, message: str) -> None:
    import json

    from bcd.registry._artifacts import validate_model_json

    model = write_tiny_model(tmp_path / "m", extra=extra)
    with pytest.raises(InvalidInputError, match=message):
        load_model_spec(model)
    # Registration refuses the same folder, naming the same field.
    document = json.loads((model / "model.json").read_text())
    with pytest.raises(InvalidInputError, match=message):
        validate_model_json(document, "model.json")


def test_the_decision_follows_the_models_threshold(
    tmp_path: Path, make_client: Callable[..., TestClient], idc_png: bytes
) -> None:
    low = write_tiny_model(tmp_path / "low", extra={"decision_threshold": 0.01})
    high = write_tiny_model(tmp_path / "high", extra={"decision_threshold": 0.99999})
    source = InMemoryEndpointSource(
        [endpoint_spec("ep", [("low", low, 1.0)]), endpoint_spec("strict", [("high", high, 1.0)])]
    )
    client = make_client(source=source)
    headers = {"Content-Type": "application/x-image"}
    lenient = client.post("/predict-breast-cancer", content=idc_png, headers=headers).json()
    strict = client.post("/endpoints/strict/invocations", content=idc_png, headers=headers).json()
    # Same weights, same probabilities; only the threshold differs.
    assert lenient["probabilities"] == pytest.approx(strict["probabilities"])
    assert 0.01 <= lenient["probabilities"][1] < 0.99999
    assert lenient["cancer_detected"] is True and lenient["message"] == "Cancer detected"
    assert strict["cancer_detected"] is False and strict["predicted_class"] == 0
    text = client.post(
        "/endpoints/strict/invocations",
        content=idc_png,
        headers={**headers, "Accept": "text/plain"},
    )
    assert text.text == "Cancer not detected"


def test_responses_and_endpoint_descriptions_state_the_threshold(
    tmp_path: Path, make_client: Callable[..., TestClient], idc_png: bytes
) -> None:
    model = write_tiny_model(tmp_path / "m", extra={"decision_threshold": 0.25})
    client = make_client(source=InMemoryEndpointSource([endpoint_spec("ep", [("v", model, 1.0)])]))
    document = client.post(
        "/predict-breast-cancer", content=idc_png, headers={"Content-Type": "image/png"}
    ).json()
    assert document["threshold"] == 0.25
    described = client.get("/endpoints/ep").json()
    assert described["ProductionVariants"][0]["DecisionThreshold"] == 0.25
