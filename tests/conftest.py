"""Fixtures shared by every test: an isolated BCD_HOME per test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
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


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback for the whole session (skips without moto/s3fs)."""
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


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials, as moto accepts any."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
