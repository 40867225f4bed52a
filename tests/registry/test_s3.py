"""A model whose artifacts live in S3 (a moto server on loopback) deploys from the cache."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd import registry
from bcd.config import Settings
from tests.registry.helpers import MODEL_JSON, variant


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_s3_model_is_downloaded_verified_and_served_from_cache(
    s3_endpoint: str, bcd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
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
