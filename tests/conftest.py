"""Fixtures shared by every test: an isolated BCD_HOME per test."""

from __future__ import annotations

import os
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
    for name in ("BCD_DATABASE_URL", "BCD_ARTIFACT_ROOT", "BCD_DATASET_ROOT", "BCD_OUTPUT"):
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
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL (no database part) for the whole session.

    ``BCD_TEST_POSTGRES_URL`` names a running server (``.ci/run`` starts one);
    otherwise a throwaway cluster is made with Debian's ``postgresql`` binaries
    in a temp folder, on a free loopback port, and removed at the end. Skips
    when neither is available.
    """
    from tests.postgres import throwaway_cluster

    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg[binary] (bcd[dev])")
    given = os.environ.get("BCD_TEST_POSTGRES_URL")
    if given:
        yield given.rstrip("/")
        return
    with throwaway_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(
    request: pytest.FixtureRequest, bcd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[config.Settings]:
    """Settings on a fresh metadata store of each backend: SQLite, then PostgreSQL.

    The PostgreSQL store is a new database per test, dropped afterwards;
    ``BCD_DATABASE_URL`` points at it so child processes use it too.
    """
    if request.param == "sqlite":
        yield config.Settings(home=bcd_home)
        return
    from tests.postgres import temporary_database

    server = request.getfixturevalue("postgres_server")
    with temporary_database(server) as url:
        monkeypatch.setenv("BCD_DATABASE_URL", url)
        config.get_settings.cache_clear()
        yield config.Settings(home=bcd_home, database_url=url)
        db.dispose_engines()


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


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The address of one local Ray cluster (2 CPUs) for the whole session.

    Started in this process with ``ray.init``; job supervisors connect to it
    by address. Skips when Ray is not installed (``bcd[ray]``).
    """
    ray = pytest.importorskip(
        "ray", reason="the ray executor tests need Ray (pip install 'bcd[ray]')"
    )
    context = ray.init(
        address="local",  # a new cluster, even when `ray start` runs here
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        configure_logging=False,
    )
    yield context.address_info["gcs_address"]
    ray.shutdown()
