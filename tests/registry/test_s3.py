"""A model whose artifacts live in S3 (a moto server on loopback) deploys from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bcd import registry
from bcd.config import Settings
from tests.registry.helpers import MODEL_JSON, variant


def test_s3_model_is_downloaded_verified_and_served_from_cache(
    moto_endpoint: str, bcd_home: Path, s3_credentials: None
) -> None:
    import s3fs

    s3_endpoint = moto_endpoint
    settings = Settings(home=bcd_home, s3_endpoint_url=s3_endpoint)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("models")
    fs.pipe("models/cnn/model.json", json.dumps(MODEL_JSON).encode())
    fs.pipe("models/cnn/model.onnx", b"graph-in-s3")
    s3fs.S3FileSystem.clear_instance_cache()

    registry.create_model("cnn", model_data="s3://models/cnn", settings=settings)
    registry.create_endpoint_config("c1", [variant("A", "cnn")], settings=settings)
    registry.create_endpoint("e1", "c1", settings=settings)
    described = registry.describe_endpoint("e1", settings=settings)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    (resolved,) = registry.resolve_endpoint("e1", settings=settings).variants
    assert resolved.model_dir == bcd_home / "cache" / "models" / "cnn"
    assert (resolved.model_dir / "model.onnx").read_bytes() == b"graph-in-s3"

    # The object changes behind the registry's back: a new endpoint refuses it.
    fs.pipe("models/cnn/model.onnx", b"tampered")
    s3fs.S3FileSystem.clear_instance_cache()
    (resolved.model_dir / "model.onnx").write_bytes(b"stale cache")
    registry.create_endpoint("e2", "c1", settings=settings)
    described = registry.describe_endpoint("e2", settings=settings)
    assert described["EndpointStatus"] == "Failed"
    assert "changed since model 'cnn' was created" in described["FailureReason"]


def _put_s3_objects(moto_endpoint: str, prefix: str, files: dict[str, bytes]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_endpoint})
    if not fs.exists("models"):
        fs.mkdir("models")
    for name, content in files.items():
        fs.pipe(f"models/{prefix}/{name}", content)
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_model_brings_its_torch_weights_and_explains(
    moto_endpoint: str, bcd_home: Path, s3_credentials: None
) -> None:
    pytest.importorskip("captum")
    from bcd.slides._explain import load_explainer

    bundled = Path(registry.__file__).parents[1] / "bundled"
    files = {name: (bundled / name).read_bytes() for name in ("model.json", "model.onnx")}
    files["model.pt"] = (bundled / "model.pt").read_bytes()
    _put_s3_objects(moto_endpoint, "bundled-pt", files)
    settings = Settings(home=bcd_home, s3_endpoint_url=moto_endpoint)

    registry.create_model("withpt", model_data="s3://models/bundled-pt", settings=settings)
    registry.create_endpoint_config("cpt", [variant("A", "withpt")], settings=settings)
    registry.create_endpoint("ept", "cpt", settings=settings)
    described = registry.describe_endpoint("ept", settings=settings)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    (resolved,) = registry.resolve_endpoint("ept", settings=settings).variants
    assert (resolved.model_dir / "model.pt").read_bytes() == files["model.pt"]
    assert (resolved.model_dir / "model.onnx").read_bytes() == files["model.onnx"]
    assert not [path.name for path in resolved.model_dir.iterdir() if path.name.startswith(".")]
    explainer = load_explainer(resolved.model_dir)
    tiles = np.full((2, 50, 50, 3), 200, dtype=np.uint8)
    assert explainer.heatmaps(tiles).shape == (2, 50, 50)


def test_s3_model_without_torch_weights_serves_and_says_why_it_cannot_explain(
    moto_endpoint: str, bcd_home: Path, s3_credentials: None
) -> None:
    from bcd.errors import ExplanationsUnavailableError
    from bcd.slides._explain import load_explainer

    _put_s3_objects(
        moto_endpoint,
        "no-pt",
        {"model.json": json.dumps(MODEL_JSON).encode(), "model.onnx": b"graph-without-weights"},
    )
    settings = Settings(home=bcd_home, s3_endpoint_url=moto_endpoint)
    registry.create_model("nopt", model_data="s3://models/no-pt", settings=settings)
    registry.create_endpoint_config("cnopt", [variant("A", "nopt")], settings=settings)
    registry.create_endpoint("enopt", "cnopt", settings=settings)
    described = registry.describe_endpoint("enopt", settings=settings)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    (resolved,) = registry.resolve_endpoint("enopt", settings=settings).variants
    assert sorted(path.name for path in resolved.model_dir.iterdir()) == [
        "model.json",
        "model.onnx",
    ]
    with pytest.raises(ExplanationsUnavailableError, match=r"no torch weights \(model.pt\)"):
        load_explainer(resolved.model_dir)

    # The weights arrive later: the next verified fetch (a new endpoint) brings them.
    _put_s3_objects(moto_endpoint, "no-pt", {"model.pt": b"weights-added-later"})
    registry.create_endpoint("enopt2", "cnopt", settings=settings)
    described = registry.describe_endpoint("enopt2", settings=settings)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    assert (resolved.model_dir / "model.pt").read_bytes() == b"weights-added-later"
    assert (resolved.model_dir / "model.onnx").read_bytes() == b"graph-without-weights"
