"""Every load checks a model's ONNX file against the SHA-256 recorded at registration.

The tampering changes the bytes of one weight tensor inside ``model.onnx``, so
the file is still a valid ONNX graph that ONNX Runtime would happily serve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bcd import registry
from bcd.config import Settings
from bcd.errors import ArtifactIntegrityError, NotReadyError
from bcd.serving import (
    EndpointRouter,
    EndpointSpec,
    InMemoryEndpointSource,
    ModelRuntime,
    RegistryEndpointSource,
    VariantSpec,
    _runtime,
    create_app,
)
from bcd.testing.models import write_tiny_model
from tests.registry.helpers import variant

ort = pytest.importorskip("onnxruntime")  # the serve extra

PALE = np.full((50, 50, 3), 235, np.uint8)


def _tamper_one_weight(onnx_path: Path) -> None:
    """Double the ``projection`` initializer's values in place (same length, still ONNX)."""
    weights = np.array([[1.0, -1.0]] * 3, dtype=np.float32).tobytes()  # write_tiny_model's
    data = onnx_path.read_bytes()
    assert data.count(weights) == 1
    onnx_path.write_bytes(data.replace(weights, (np.frombuffer(weights, np.float32) * 2).tobytes()))


def _npy(image: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, image[None])
    return buffer.getvalue()


@pytest.fixture
def two_endpoints(tmp_path: Path, settings: Settings) -> dict[str, Path]:
    """Endpoints ``good`` and ``bad``, each InService on its own tiny model."""
    files = {}
    for name in ("good", "bad"):
        folder = write_tiny_model(tmp_path / "artifacts" / name)
        registry.create_model(f"m-{name}", model_data=str(folder), settings=settings)
        registry.create_endpoint_config(f"c-{name}", [variant("A", f"m-{name}")], settings=settings)
        registry.create_endpoint(name, f"c-{name}", settings=settings)
        files[name] = folder / "model.onnx"
    return files


@pytest.fixture
def tampered(two_endpoints: dict[str, Path], settings: Settings) -> Iterator[dict[str, str]]:
    """``bad``'s model.onnx changed on disk after deployment: the digests involved."""
    onnx_path = two_endpoints["bad"]
    expected = registry.describe_model("m-bad", settings=settings)["OnnxSha256"]
    _tamper_one_weight(onnx_path)
    ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])  # still loads
    actual = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert actual != expected
    yield {"file": str(onnx_path), "expected": expected, "actual": actual}


def test_a_tampered_model_fails_its_endpoint_at_restart_and_others_keep_serving(
    tampered: dict[str, str], settings: Settings
) -> None:
    from fastapi.testclient import TestClient

    app = create_app(settings, poll_interval_s=0.05)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert app.state.router.wait_ready(10)
        headers = {"Content-Type": "application/x-npy"}
        good = client.post("/endpoints/good/invocations", content=_npy(PALE), headers=headers)
        assert good.status_code == 200
        assert good.json()["cancer_detected"] is False
        bad = client.post("/endpoints/bad/invocations", content=_npy(PALE), headers=headers)
        assert bad.status_code == 503
        assert bad.json()["error"]["code"] == "not_ready"
        for part in tampered.values():
            assert part in bad.json()["error"]["message"]
    described = registry.describe_endpoint("bad", settings=settings)
    assert described["EndpointStatus"] == "Failed"
    reason = described["FailureReason"]
    assert "variant A (model m-bad)" in reason
    for part in tampered.values():
        assert part in reason
    assert registry.describe_endpoint("good", settings=settings)["EndpointStatus"] == "InService"


def test_a_router_refuses_the_tampered_variant_and_loads_the_rest(
    tampered: dict[str, str], settings: Settings
) -> None:
    router = EndpointRouter(RegistryEndpointSource(settings), settings)
    try:
        router.sync()
        assert router.has("good")
        assert not router.has("bad")
        router.sync()  # the next poll sees the endpoint Failed and keeps the reason
        (bad,) = router.describe("bad")
        assert bad["EndpointStatus"] == "Failed"
        assert tampered["actual"] in bad["FailureReason"]
    finally:
        router.close()


def test_the_digest_is_checked_once_per_load_not_per_request(
    two_endpoints: dict[str, Path], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[Path] = []
    real = _runtime.verify_onnx_file

    def counting(path: Path, expected: str) -> None:
        checked.append(path)
        real(path, expected)

    monkeypatch.setattr(_runtime, "verify_onnx_file", counting)
    router = EndpointRouter(RegistryEndpointSource(settings), settings, only={"good"})
    try:
        router.sync()
        for _ in range(3):
            with router.use("good") as loaded:
                router.choose(loaded, None).runtime.predict([PALE])
        router.sync()
    finally:
        router.close()
    assert checked == [two_endpoints["good"]]


def test_the_runtime_refuses_a_file_that_does_not_match(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path / "model")
    digest = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    ModelRuntime(folder, expected_sha256=digest).close()
    wrong = "0" * 64
    with pytest.raises(ArtifactIntegrityError, match=f"expected SHA-256 {wrong}, found {digest}"):
        ModelRuntime(folder, expected_sha256=wrong)


def test_an_in_memory_source_records_the_failure(tmp_path: Path, settings: Settings) -> None:
    folder = write_tiny_model(tmp_path / "model")
    spec = EndpointSpec(
        "ep", "InService", "cfg", 3, (VariantSpec("A", "m", folder, onnx_sha256="f" * 64),)
    )
    source = InMemoryEndpointSource([spec])
    router = EndpointRouter(source, settings)
    try:
        router.sync()
        assert not router.has("ep")
    finally:
        router.close()
    failed = source.resolve_endpoint("ep")
    assert failed.status == "Failed"
    assert failed.failure_reason is not None and "f" * 64 in failed.failure_reason


def test_an_update_to_a_tampered_model_is_refused_and_the_old_config_serves(
    two_endpoints: dict[str, Path], tampered: dict[str, str], settings: Settings
) -> None:
    registry.create_endpoint_config("c-to-bad", [variant("B", "m-bad")], settings=settings)
    registry.update_endpoint("good", "c-to-bad", settings=settings)
    described = registry.describe_endpoint("good", settings=settings)
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "c-good")
    assert tampered["expected"] in described["FailureReason"]
    assert tampered["actual"] in described["FailureReason"]


def test_fail_endpoint_marks_only_the_version_that_failed(
    two_endpoints: dict[str, Path], settings: Settings
) -> None:
    assert not registry.fail_endpoint("good", 7, "stale version", settings=settings)
    assert registry.describe_endpoint("good", settings=settings)["EndpointStatus"] == "InService"
    assert registry.fail_endpoint("good", 1, "model.onnx changed", settings=settings)
    assert not registry.fail_endpoint("good", 1, "again", settings=settings)  # already Failed
    described = registry.describe_endpoint("good", settings=settings)
    assert (described["EndpointStatus"], described["FailureReason"]) == (
        "Failed",
        "model.onnx changed",
    )


@pytest.mark.parametrize("reference", ["m-bad", "bad"], ids=["registered-model", "endpoint"])
def test_evaluate_refuses_a_tampered_model_or_endpoint(
    tampered: dict[str, str], settings: Settings, reference: str
) -> None:
    from bcd.evaluation._resolve import resolve_model

    with pytest.raises(ArtifactIntegrityError) as raised:
        resolve_model(reference, settings)
    for part in tampered.values():
        assert part in raised.value.message
    assert resolve_model("good", settings).kind == "endpoint"
    assert resolve_model("m-good", settings).kind == "model"


def test_slide_analysis_refuses_a_tampered_endpoint_and_scores_with_the_others(
    tampered: dict[str, str], settings: Settings
) -> None:
    from bcd.cli.slides import _classifier
    from bcd.serving import close_local_services

    try:
        with pytest.raises(NotReadyError, match=tampered["actual"]), _classifier("bad", None):
            pass
        with _classifier("good", None) as (predict, model):
            assert model["model"] == "m-good"
            assert predict(PALE[None]).shape == (1, 2)
    finally:
        close_local_services()
    assert registry.describe_endpoint("bad", settings=settings)["EndpointStatus"] == "Failed"
