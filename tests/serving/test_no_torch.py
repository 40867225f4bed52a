"""Serving runs without torch: nothing on the serving path imports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_serving_never_imports_torch(tiny_model: Path, tmp_path: Path) -> None:
    code = f"""
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from bcd.config import Settings
from bcd.serving import EndpointSpec, InMemoryEndpointSource, VariantSpec, create_app
import bcd.cli.serve, bcd.clients
variant = VariantSpec("A", "m", Path({str(tiny_model)!r}))
spec = EndpointSpec("ep", "InService", "cfg", 1, (variant,))
app = create_app(Settings(home=Path({str(tmp_path)!r}), default_endpoint="ep"),
                 source=InMemoryEndpointSource([spec]))
with TestClient(app) as client:
    assert app.state.router.wait_ready(10)
    body = Path({str(tiny_model / "model.json")!r}).read_bytes()
    assert client.post("/predict-breast-cancer", content=body,
                       headers={{"Content-Type": "image/png"}}).status_code == 400
    import numpy as np, io
    buffer = io.BytesIO(); np.save(buffer, np.zeros((50, 50, 3), np.uint8))
    response = client.post("/predict-breast-cancer", content=buffer.getvalue(),
                           headers={{"Content-Type": "application/x-npy"}})
    assert response.status_code == 200, response.text
    client.get("/metrics"); client.get("/openapi.json")
assert "torch" not in sys.modules, "serving imported torch"
assert "onnxruntime" in sys.modules
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
