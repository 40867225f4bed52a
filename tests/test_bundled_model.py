"""The bundled models that `make run` serves: present, small, and right on held-out patches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bcd import registry
from bcd.bundled import MODEL_DIR
from bcd.config import Settings
from bcd.serving import create_app

# Patches of patients in the held-out test split (patient split 0.7/0.15/0.15, seed 42).
IDC_PATCH = "13616/1/13616_idx5_x1801_y1501_class1.png"
NO_IDC_PATCH = "12822/0/12822_idx5_x2351_y1251_class0.png"


def test_bundled_artifacts_are_complete_and_small() -> None:
    spec = json.loads((MODEL_DIR / "model.json").read_text())
    assert spec["algorithm"] == "cnn"
    assert spec["input"]["shape"] == [3, 50, 50]
    assert spec["temperature"] > 0
    assert (MODEL_DIR / "model.onnx").stat().st_size <= 10 * 1024 * 1024
    assert (MODEL_DIR / "MODEL_CARD.md").is_file()


def test_bundled_accurate_artifacts_are_complete() -> None:
    folder = MODEL_DIR / "accurate"
    spec = json.loads((folder / "model.json").read_text())
    assert spec["input"]["shape"] == [3, 50, 50]
    assert spec["temperature"] > 0
    assert (folder / spec["onnx"]["file"]).is_file()
    assert (folder / "model.pt").is_file()  # Grad-CAM explanations need the torch weights


@pytest.mark.parametrize("variant", [None, "fast", "accurate"], ids=["default", "fast", "accurate"])
def test_make_run_path_answers_both_classes(
    settings: Settings, shared_data: Path, variant: str | None
) -> None:
    endpoint = registry.ensure_bundled_endpoint(settings)
    pinned = {"X-Target-Variant": variant} if variant else {}
    with TestClient(create_app(settings)) as client:
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        answers = {}
        for relpath in (IDC_PATCH, NO_IDC_PATCH):
            response = client.post(
                "/predict-breast-cancer",
                content=(shared_data / relpath).read_bytes(),
                headers={"Content-Type": "application/x-image", "Accept": "text/plain", **pinned},
            )
            assert response.status_code == 200, response.text
            answers[relpath] = response.text
    assert endpoint == settings.default_endpoint
    assert answers[IDC_PATCH] == "Cancer detected"
    assert answers[NO_IDC_PATCH] == "Cancer not detected"
