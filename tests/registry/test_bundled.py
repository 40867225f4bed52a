"""The bundled models: registered and deployed as the default endpoint, idempotently."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from bcd import db, registry
from bcd.config import Settings
from bcd.errors import ArtifactIntegrityError, NotFoundError, NotReadyError
from bcd.registry import _bundled, keys
from bcd.registry._models import SOURCE_BUNDLED, register_artifact
from bcd.registry._tables import EndpointRecord, VariantStatsRecord
from tests.registry.helpers import variant, write_artifact

ACCURATE = "bcd-bundled-accurate"
ACCURATE_GRAPH = b"bundled-accurate-graph-v1"


def _ship(monkeypatch: pytest.MonkeyPatch, onnx_bytes: bytes) -> None:
    """Make ``onnx_bytes`` the bundled (fast) ONNX file this release ships."""
    monkeypatch.setattr(_bundled, "BUNDLED_ONNX_SHA256", hashlib.sha256(onnx_bytes).hexdigest())


def _ship_accurate(monkeypatch: pytest.MonkeyPatch, onnx_bytes: bytes) -> None:
    """Make ``onnx_bytes`` the bundled accurate ONNX file this release ships."""
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    monkeypatch.setattr(_bundled, "BUNDLED_ACCURATE_ONNX_SHA256", digest)


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_artifact(tmp_path / "bundled", onnx_bytes=b"bundled-graph-v1")
    write_artifact(folder / "accurate", onnx_bytes=ACCURATE_GRAPH, decision_threshold=0.4)
    monkeypatch.setattr(_bundled, "bundled_model_dir", lambda: folder)
    _ship(monkeypatch, b"bundled-graph-v1")
    _ship_accurate(monkeypatch, ACCURATE_GRAPH)
    return folder


def _fail(settings: Settings, name: str) -> None:
    with db.session_scope(settings) as session:
        record = session.get(EndpointRecord, name)
        record.status, record.failure_reason = "Failed", "disk was full"


def _variants(settings: Settings, name: str = "bcd-default") -> list[tuple[str, str, float]]:
    described = registry.describe_endpoint(name, settings=settings)
    return [
        (each["VariantName"], each["ModelName"], each["CurrentWeight"])
        for each in described["ProductionVariants"]
    ]


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
    assert described["EndpointConfigName"] == "bcd-default-accurate-fast"
    # The default variant first, with all the traffic that does not pin a variant.
    assert _variants(settings) == [
        ("accurate", "bcd-bundled-accurate", 1.0),
        ("fast", "bcd-bundled", 0.0),
    ]
    for model_name in ("bcd-bundled", "bcd-bundled-accurate"):
        model = registry.describe_model(model_name, settings=settings)
        assert model["ModelSource"] == {"Type": "bundled"}
    resolved = registry.resolve_endpoint(name, settings=settings)
    assert [v.model_dir for v in resolved.variants] == [bundled / "accurate", bundled]


def test_the_default_variant_is_one_constant(
    bundled: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.ensure_bundled_endpoint(settings)
    monkeypatch.setattr(_bundled, "BUNDLED_DEFAULT_VARIANT", "fast")
    registry.ensure_bundled_endpoint(settings)  # a release with another default moves it
    described = registry.describe_endpoint("bcd-default", settings=settings)
    assert (described["EndpointConfigName"], described["Version"]) == (
        "bcd-default-fast-accurate",
        2,
    )
    assert _variants(settings) == [("fast", "bcd-bundled", 1.0), ("accurate", ACCURATE, 0.0)]


def test_is_idempotent(bundled: Path, settings: Settings) -> None:
    registry.ensure_bundled_endpoint(settings)
    registry.ensure_bundled_endpoint(settings)
    assert registry.describe_endpoint("bcd-default", settings=settings)["Version"] == 1
    assert sorted(m["ModelName"] for m in registry.list_models(settings=settings)) == [
        "bcd-bundled",
        ACCURATE,
    ]


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


def test_the_shipped_accurate_model_matches_its_recorded_digest() -> None:
    _bundled.verify_bundled_model(variant="accurate")
    _bundled.verify_bundled_model(variant=ACCURATE)  # by model name too


def test_an_absent_accurate_model_is_a_clear_not_found(bundled: Path, settings: Settings) -> None:
    (bundled / "accurate" / "model.onnx").unlink()
    with pytest.raises(NotFoundError, match="bundled 'accurate' model"):
        registry.ensure_bundled_endpoint(settings)
    assert registry.list_models(settings=settings) == []


def test_a_new_accurate_model_is_rolled_out(
    bundled: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.ensure_bundled_endpoint(settings)
    (bundled / "accurate" / "model.onnx").write_bytes(b"bundled-accurate-graph-v2")
    _ship_accurate(monkeypatch, b"bundled-accurate-graph-v2")  # the files and one constant
    registry.ensure_bundled_endpoint(settings)
    described = registry.describe_endpoint("bcd-default", settings=settings)
    assert (described["EndpointStatus"], described["Version"]) == ("InService", 2)
    model = registry.describe_model(ACCURATE, settings=settings)
    assert model["OnnxSha256"] == hashlib.sha256(b"bundled-accurate-graph-v2").hexdigest()


def test_a_changed_accurate_file_is_refused_and_fails_the_endpoint(
    bundled: Path, settings: Settings
) -> None:
    registry.ensure_bundled_endpoint(settings)
    (bundled / "accurate" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="expected SHA-256"):
        registry.ensure_bundled_endpoint(settings)
    described = registry.describe_endpoint("bcd-default", settings=settings)
    assert described["EndpointStatus"] == "Failed"
    assert hashlib.sha256(b"tampered").hexdigest() in described["FailureReason"]


def test_an_older_single_variant_deployment_is_upgraded_in_place(
    bundled: Path, model: Callable[[str], str], settings: Settings
) -> None:
    # What bcd releases before the two variants left behind: model bcd-bundled in
    # config "bcd-default" as variant AllTraffic, with invocation counts, API keys
    # and other endpoints beside it.
    register_artifact("bcd-bundled", str(bundled), SOURCE_BUNDLED, None, settings)
    registry.create_endpoint_config(
        "bcd-default", [variant("AllTraffic", "bcd-bundled")], settings=settings
    )
    registry.create_endpoint("bcd-default", "bcd-default", settings=settings)
    registry.record_invocations("bcd-default", "AllTraffic", 7, 21.0, errors=1, settings=settings)
    model("mine")
    registry.create_endpoint_config("mine", [variant("A", "mine")], settings=settings)
    registry.create_endpoint("other", "mine", settings=settings)
    registry.record_invocations("other", "A", 3, 6.0, settings=settings)
    key = keys.create_api_key("pathology-app", settings=settings)
    before_other = registry.describe_endpoint("other", settings=settings)

    assert registry.ensure_bundled_endpoint(settings) == "bcd-default"

    described = registry.describe_endpoint("bcd-default", settings=settings)
    assert (described["EndpointStatus"], described["Version"]) == ("InService", 2)
    assert described["EndpointConfigName"] == "bcd-default-accurate-fast"
    assert "FailureReason" not in described
    assert _variants(settings) == [("accurate", ACCURATE, 1.0), ("fast", "bcd-bundled", 0.0)]
    with db.session_scope(settings) as session:
        old_counts = session.get(VariantStatsRecord, ("bcd-default", "AllTraffic"))
        assert (old_counts.invocations, old_counts.errors) == (7, 1)
    assert registry.describe_endpoint("other", settings=settings) == before_other
    assert keys.verify_api_key(key.raw_key, settings=settings).name == "pathology-app"
    # The old config is kept (configs are immutable records), and nothing runs twice.
    configs = {c["EndpointConfigName"] for c in registry.list_endpoint_configs(settings=settings)}
    assert configs == {"bcd-default", "bcd-default-accurate-fast", "mine"}
    registry.ensure_bundled_endpoint(settings)
    assert registry.describe_endpoint("bcd-default", settings=settings)["Version"] == 2


def test_a_user_config_of_bundled_models_is_kept(bundled: Path, settings: Settings) -> None:
    registry.ensure_bundled_endpoint(settings)
    registry.create_endpoint_config(
        "split", [variant("A", "bcd-bundled"), variant("B", ACCURATE)], settings=settings
    )
    registry.update_endpoint("bcd-default", "split", settings=settings)
    registry.ensure_bundled_endpoint(settings)
    assert registry.describe_endpoint("bcd-default", settings)["EndpointConfigName"] == "split"
