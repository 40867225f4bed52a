"""The bundled model: registered and deployed as the default endpoint, idempotently."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from bcd import db, registry
from bcd.config import Settings
from bcd.errors import ArtifactIntegrityError, NotFoundError, NotReadyError
from bcd.registry import _bundled
from bcd.registry._tables import EndpointRecord
from tests.registry.helpers import variant, write_artifact


def _ship(monkeypatch: pytest.MonkeyPatch, onnx_bytes: bytes) -> None:
    """Make ``onnx_bytes`` the bundled ONNX file this release ships."""
    monkeypatch.setattr(_bundled, "BUNDLED_ONNX_SHA256", hashlib.sha256(onnx_bytes).hexdigest())


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_artifact(tmp_path / "bundled", onnx_bytes=b"bundled-graph-v1")
    monkeypatch.setattr(_bundled, "bundled_model_dir", lambda: folder)
    _ship(monkeypatch, b"bundled-graph-v1")
    return folder


def _fail(settings: Settings, name: str) -> None:
    with db.session_scope(settings) as session:
        record = session.get(EndpointRecord, name)
        record.status, record.failure_reason = "Failed", "disk was full"


def test_absent_bundled_model_is_a_clear_not_found(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bundled, "bundled_model_dir", lambda: tmp_path / "empty")
    with pytest.raises(NotFoundError, match="bcd quickstart"):
        registry.ensure_bundled_endpoint(settings)
    assert registry.list_models(settings=settings) == []


def test_registers_and_deploys_the_default_endpoint(bundled: Path, settings: Settings) -> None:
    name = registry.ensure_bundled_endpoint(settings)
    assert name == settings.default_endpoint == "bcd-default"
    described = registry.describe_endpoint(name, settings=settings)
    assert (described["EndpointStatus"], described["Version"]) == ("InService", 1)
    (only,) = described["ProductionVariants"]
    assert (only["VariantName"], only["ModelName"]) == ("AllTraffic", "bcd-bundled")
    model = registry.describe_model("bcd-bundled", settings=settings)
    assert model["ModelSource"] == {"Type": "bundled"}
    assert registry.resolve_endpoint(name, settings=settings).variants[0].model_dir == bundled


def test_is_idempotent(bundled: Path, settings: Settings) -> None:
    registry.ensure_bundled_endpoint(settings)
    registry.ensure_bundled_endpoint(settings)
    assert registry.describe_endpoint("bcd-default", settings=settings)["Version"] == 1
    assert [m["ModelName"] for m in registry.list_models(settings=settings)] == ["bcd-bundled"]


def test_follows_the_default_endpoint_setting(bundled: Path, bcd_home: Path) -> None:
    custom = Settings(home=bcd_home, default_endpoint="idc")
    assert registry.ensure_bundled_endpoint(custom) == "idc"
    assert registry.describe_endpoint("idc", settings=custom)["EndpointStatus"] == "InService"


def test_a_new_bundled_model_is_rolled_out(
    bundled: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.ensure_bundled_endpoint(settings)
    (bundled / "model.onnx").write_bytes(b"bundled-graph-v2")
    _ship(monkeypatch, b"bundled-graph-v2")  # an upgrade brings the file and its digest
    registry.ensure_bundled_endpoint(settings)
    described = registry.describe_endpoint("bcd-default", settings=settings)
    assert (described["EndpointStatus"], described["Version"]) == ("InService", 2)
    assert "FailureReason" not in described


def test_a_failed_bundled_endpoint_is_recreated(bundled: Path, settings: Settings) -> None:
    registry.ensure_bundled_endpoint(settings)
    _fail(settings, "bcd-default")
    registry.ensure_bundled_endpoint(settings)
    assert registry.describe_endpoint("bcd-default", settings=settings)["EndpointStatus"] == (
        "InService"
    )


def test_a_user_config_on_the_default_endpoint_is_kept(
    bundled: Path, model: Callable[[str], str], settings: Settings
) -> None:
    registry.ensure_bundled_endpoint(settings)
    model("mine")
    registry.create_endpoint_config("mine", [variant("A", "mine")], settings=settings)
    registry.update_endpoint("bcd-default", "mine", settings=settings)
    registry.ensure_bundled_endpoint(settings)
    assert registry.describe_endpoint("bcd-default", settings)["EndpointConfigName"] == "mine"
    _fail(settings, "bcd-default")
    with pytest.raises(NotReadyError, match="disk was full"):
        registry.ensure_bundled_endpoint(settings)


def test_a_changed_bundled_file_is_refused_and_fails_the_endpoint(
    bundled: Path, settings: Settings
) -> None:
    registry.ensure_bundled_endpoint(settings)
    (bundled / "model.onnx").write_bytes(b"bundled-graph-tampered")
    with pytest.raises(ArtifactIntegrityError) as raised:
        registry.ensure_bundled_endpoint(settings)
    actual = hashlib.sha256(b"bundled-graph-tampered").hexdigest()
    for part in (str(bundled / "model.onnx"), _bundled.BUNDLED_ONNX_SHA256, actual):
        assert part in raised.value.message
    described = registry.describe_endpoint("bcd-default", settings=settings)
    assert described["EndpointStatus"] == "Failed"
    assert actual in described["FailureReason"]
    model = registry.describe_model("bcd-bundled", settings=settings)
    assert model["OnnxSha256"] == _bundled.BUNDLED_ONNX_SHA256  # the record was not "refreshed"
    (bundled / "model.onnx").write_bytes(b"bundled-graph-v1")  # restored: deployed again
    registry.ensure_bundled_endpoint(settings)
    assert registry.describe_endpoint("bcd-default", settings)["EndpointStatus"] == "InService"


def test_a_changed_bundled_file_is_never_registered(bundled: Path, settings: Settings) -> None:
    (bundled / "model.onnx").write_bytes(b"not what was shipped")
    with pytest.raises(ArtifactIntegrityError, match="expected SHA-256"):
        registry.ensure_bundled_endpoint(settings)
    assert registry.list_models(settings=settings) == []


def test_the_shipped_bundled_model_matches_its_recorded_digest() -> None:
    _bundled.verify_bundled_model()
