"""A model whose artifacts live in S3 (a moto server on loopback) deploys from the cache."""

from __future__ import annotations

import json
from pathlib import Path

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
