"""A throwaway PostgreSQL cluster and per-test databases for the store tests.

PostgreSQL refuses to run as root, so as root the cluster is created and run
as the ``postgres`` user (``runuser``); as anyone else it runs as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_SKIP = (
    "PostgreSQL is not available: install Debian's `postgresql` package "
    "(apt-get install postgresql) or set BCD_TEST_POSTGRES_URL to a running server"
)


def _binaries() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        pytest.skip(f"{_SKIP} (running as root without runuser)")
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """``initdb`` + ``pg_ctl start`` a cluster in a temp folder; yields its server URL.

    Skips the calling test when PostgreSQL's binaries are not installed.
    """
    binaries = _binaries()
    if binaries is None:
        pytest.skip(_SKIP)
    folder = Path(tempfile.mkdtemp(prefix="bcd-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    port = _free_port()
    try:
        subprocess.run(
            _as_server_user(
                [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
        log = str(folder / "server.log")
        subprocess.run(
            _as_server_user(
                [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", log, "start"]
            ),
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        detail = getattr(error, "stderr", b"") or b""
        pytest.skip(f"{_SKIP} (starting a cluster failed: {detail.decode()[-300:] or error})")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _admin(server: str, statement: str) -> None:
    import psycopg

    plain = server.replace("postgresql+psycopg://", "postgresql://", 1)
    deadline = time.monotonic() + 20
    while True:
        try:
            with psycopg.connect(f"{plain}/postgres", autocommit=True) as connection:
                connection.execute(statement)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def temporary_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server``; yields its SQLAlchemy URL, drops it after."""
    name = f"bcd_test_{uuid.uuid4().hex[:12]}"
    _admin(server, f"CREATE DATABASE {name}")
    try:
        yield f"{server}/{name}"
    finally:
        from bcd import db

        db.dispose_engines()
        _admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
