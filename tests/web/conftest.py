"""Browser tests: ``bcd serve`` in a subprocess, driven by headless Debian Chromium.

Skipped cleanly when Chromium (``apt-get install -y chromium``) or Playwright
is missing. Screenshots go to ``test-artifacts/web/`` (git-ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
ENDPOINT = "bcd-web-test"
CALIBRATED_ENDPOINT = "bcd-web-calibrated"
CALIBRATED_THRESHOLD = 0.3
# Two variants like the bundled endpoint's: "accurate" (the tiny model calibrated to
# CALIBRATED_THRESHOLD) takes the unpinned traffic, "fast" (the tiny model) only pinned.
VARIANTS_ENDPOINT = "bcd-web-variants"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _register_tiny_endpoint(home: Path) -> None:
    from bcd.clients import Client
    from bcd.config import Settings
    from bcd.testing.models import write_tiny_model

    model_dir = write_tiny_model(home.parent / "tiny-model")
    client = Client(settings=Settings(home=home))
    client.create_model(ModelName="tiny", PrimaryContainer={"ModelDataUrl": str(model_dir)})
    client.create_endpoint_config(
        EndpointConfigName="tiny-config",
        ProductionVariants=[
            {
                "VariantName": "main",
                "ModelName": "tiny",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    client.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="tiny-config")
    # The same weights calibrated to a lower decision threshold (model.json).
    calibrated = write_tiny_model(
        home.parent / "tiny-calibrated", extra={"decision_threshold": CALIBRATED_THRESHOLD}
    )
    client.create_model(
        ModelName="tiny-calibrated", PrimaryContainer={"ModelDataUrl": str(calibrated)}
    )
    client.create_endpoint_config(
        EndpointConfigName="tiny-calibrated-config",
        ProductionVariants=[
            {
                "VariantName": "main",
                "ModelName": "tiny-calibrated",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    client.create_endpoint(
        EndpointName=CALIBRATED_ENDPOINT, EndpointConfigName="tiny-calibrated-config"
    )
    client.create_endpoint_config(
        EndpointConfigName="tiny-variants-config",
        ProductionVariants=[
            {
                "VariantName": "accurate",
                "ModelName": "tiny-calibrated",
                "InitialVariantWeight": 1.0,
            },
            {"VariantName": "fast", "ModelName": "tiny", "InitialVariantWeight": 0.0},
        ],
    )
    client.create_endpoint(
        EndpointName=VARIANTS_ENDPOINT, EndpointConfigName="tiny-variants-config"
    )


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``bcd serve`` subprocess on 127.0.0.1 with the tiny model as default endpoint."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    home = tmp_path_factory.mktemp("web") / "home"
    _register_tiny_endpoint(home)
    port = _free_port()
    env = {**os.environ, "BCD_HOME": str(home), "BCD_DEFAULT_ENDPOINT": ENDPOINT}
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bcd", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            raise RuntimeError((home / "serve.log").read_text()[-3000:])
        time.sleep(0.2)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def browser(server_url: str) -> Iterator[Any]:
    """Headless Debian Chromium through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, server_url: str) -> Iterator[Any]:
    """A fresh browser page (own storage) on the app."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server_url)
    yield page
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/web/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
