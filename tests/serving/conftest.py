"""Fixtures for serving tests: tiny real models, endpoint sources, apps and live servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bcd import registry
from bcd.config import Settings
from bcd.serving import EndpointSpec, InMemoryEndpointSource, VariantSpec, create_app
from bcd.testing.models import write_tiny_model

# Patches from ../shared/data that the tiny mean-colour model gets right:
# a dark, purple IDC patch and a pale no-IDC patch (chosen for clear colour).
IDC_PATCH = "10253/1/10253_idx5_x651_y701_class1.png"
NO_IDC_PATCH = "10253/0/10253_idx5_x2401_y1251_class0.png"


def endpoint_spec(
    name: str, variants: list[tuple[str, Path, float]], version: int = 1, instances: int = 1
) -> EndpointSpec:
    """An InService endpoint whose variants are ``(name, model_dir, weight)``."""
    return EndpointSpec(
        name=name,
        status="InService",
        config_name=f"{name}-config-{version}",
        version=version,
        variants=tuple(
            VariantSpec(variant, f"model-{variant}", model_dir, instances, weight)
            for variant, model_dir, weight in variants
        ),
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny mean-colour model (dark → IDC)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def always_idc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that answers IDC for every image (tells versions apart)."""
    return write_tiny_model(tmp_path_factory.mktemp("idc") / "model", weight=0.0, bias=(0, 20))


@pytest.fixture(scope="session")
def never_idc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that answers no IDC for every image."""
    return write_tiny_model(tmp_path_factory.mktemp("no-idc") / "model", weight=0.0, bias=(20, 0))


@pytest.fixture
def serving_settings(tmp_path: Path) -> Settings:
    """Settings for serving tests: loopback host, default endpoint ``ep``."""
    return Settings(home=tmp_path / "home", default_endpoint="ep", max_batch_wait_ms=2.0)


@pytest.fixture
def source(tiny_model: Path) -> InMemoryEndpointSource:
    """An in-memory registry with endpoint ``ep`` serving the tiny model."""
    return InMemoryEndpointSource([endpoint_spec("ep", [("main", tiny_model, 1.0)])])


@pytest.fixture
def make_client(
    serving_settings: Settings, source: InMemoryEndpointSource
) -> Iterator[Callable[..., TestClient]]:
    """Factory: a started TestClient (models loaded) over ``create_app``."""
    clients: list[TestClient] = []

    def make(settings: Settings | None = None, **kwargs: object) -> TestClient:
        kwargs.setdefault("source", source)
        kwargs.setdefault("poll_interval_s", 0.05)
        app = create_app(settings or serving_settings, **kwargs)  # type: ignore[arg-type]
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        assert app.state.router.wait_ready(10)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A started TestClient on the default app."""
    return make_client()


def deploy_tiny(settings: Settings, model_dir: Path) -> None:
    """Register ``model_dir`` as model ``tiny`` behind endpoint ``ep`` (config ``cfg``)."""
    registry.create_model("tiny", model_data=str(model_dir), settings=settings)
    variant = {
        "VariantName": "main",
        "ModelName": "tiny",
        "InitialInstanceCount": 1,
        "InitialVariantWeight": 1.0,
    }
    registry.create_endpoint_config("cfg", [variant], settings=settings)
    registry.create_endpoint("ep", "cfg", settings=settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server() -> Iterator[Callable[[FastAPI], str]]:
    """Factory: run an app under uvicorn in a thread on loopback; returns its base URL."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: FastAPI) -> str:
        port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def idc_png(shared_data: Path) -> bytes:
    """A real IDC patch (PNG bytes)."""
    return (shared_data / IDC_PATCH).read_bytes()


@pytest.fixture(scope="session")
def no_idc_png(shared_data: Path) -> bytes:
    """A real no-IDC patch (PNG bytes)."""
    return (shared_data / NO_IDC_PATCH).read_bytes()


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an ``H×W×3`` uint8 array as PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
