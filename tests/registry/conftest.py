"""Fixtures for registry tests: artifact folders and registered models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcd import registry
from bcd.config import Settings
from tests.registry.helpers import write_artifact


@pytest.fixture
def artifact(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``artifact("name", **model_json_overrides)`` → a fresh model folder."""

    def make(name: str = "model", **overrides: Any) -> Path:
        return write_artifact(tmp_path / "artifacts" / name, **overrides)

    return make


@pytest.fixture
def model(artifact: Callable[..., Path], settings: Settings) -> Callable[[str], str]:
    """Factory: register a model from a fresh artifact folder; returns its name."""

    def make(name: str = "m1") -> str:
        registry.create_model(name, model_data=str(artifact(name)), settings=settings)
        return name

    return make
