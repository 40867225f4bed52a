"""Fixtures shared by every test: an isolated BCD_HOME per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd import config, db

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "IDC_regular_ps50_idx5"


@pytest.fixture(autouse=True)
def bcd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point BCD_HOME at a fresh folder so no test sees another's state."""
    home = tmp_path / "bcd-home"
    monkeypatch.setenv("BCD_HOME", str(home))
    for name in ("BCD_DATABASE_URL", "BCD_ARTIFACT_ROOT", "BCD_DATASET_ROOT"):
        monkeypatch.delenv(name, raising=False)
    config.get_settings.cache_clear()
    yield home
    config.get_settings.cache_clear()
    db.dispose_engines()


@pytest.fixture
def settings(bcd_home: Path) -> config.Settings:
    """Settings bound to the test's BCD_HOME."""
    return config.Settings(home=bcd_home)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real IDC patches in ../shared/data (skips the test when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/IDC_regular_ps50_idx5 is not present")
    return SHARED_DATA
