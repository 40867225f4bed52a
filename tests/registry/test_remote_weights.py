"""Remote model folders of any fsspec kind bring their torch weights (model.pt) into the cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd import registry
from bcd.config import Settings
from bcd.registry import _artifacts
from tests.registry.helpers import MODEL_JSON, variant


@pytest.fixture
def memory_folder() -> Iterator[str]:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/models/cnn/model.json", json.dumps(MODEL_JSON).encode())
    fs.pipe("/models/cnn/model.onnx", b"graph-in-memory")
    yield "memory://models/cnn"
    fs.rm("/models", recursive=True)


def test_a_memory_url_model_brings_model_pt(memory_folder: str, bcd_home: Path) -> None:
    import fsspec

    fsspec.filesystem("memory").pipe("/models/cnn/model.pt", b"torch-state-dict")
    settings = Settings(home=bcd_home)
    registry.create_model("mem", model_data=memory_folder, settings=settings)
    registry.create_endpoint_config("cmem", [variant("A", "mem")], settings=settings)
    registry.create_endpoint("emem", "cmem", settings=settings)
    described = registry.describe_endpoint("emem", settings=settings)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    (resolved,) = registry.resolve_endpoint("emem", settings=settings).variants
    assert (resolved.model_dir / "model.pt").read_bytes() == b"torch-state-dict"


def test_the_weights_are_not_fingerprinted_but_the_graph_still_is(
    memory_folder: str, bcd_home: Path
) -> None:
    import fsspec

    from bcd.errors import ArtifactIntegrityError

    fs = fsspec.filesystem("memory")
    settings = Settings(home=bcd_home)
    info = _artifacts.inspect_artifact(memory_folder, settings)
    fs.pipe("/models/cnn/model.pt", b"weights")
    target = _artifacts.materialize("m", info.url, info.onnx_file, info.onnx_sha256, settings)
    assert sorted(path.name for path in target.iterdir()) == [
        "model.json",
        "model.onnx",
        "model.pt",
    ]
    fs.pipe("/models/cnn/model.onnx", b"tampered graph")
    (target / "model.onnx").write_bytes(b"stale")
    with pytest.raises(ArtifactIntegrityError, match="changed since model 'm' was created"):
        _artifacts.materialize("m", info.url, info.onnx_file, info.onnx_sha256, settings)
    # The refused download left the cache as it was, weights included.
    assert (target / "model.pt").read_bytes() == b"weights"
