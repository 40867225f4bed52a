"""Endpoints: the lifecycle contract, resolution for serving, invocation stats."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bcd import db, registry
from bcd.config import Settings
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from bcd.registry._tables import EndpointRecord
from tests.registry.helpers import MODEL_JSON, variant


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """Every test of this module runs on a SQLite and on a PostgreSQL store."""
    return store_settings


@pytest.fixture
def deployed(model: Callable[[str], str], settings: Settings) -> str:
    """Endpoint ``e1`` on config ``c1`` (variants A: m1 0.8, B: m2 0.2), InService."""
    model("m1")
    model("m2")
    registry.create_endpoint_config(
        "c1", [variant("A", "m1", 0.8), variant("B", "m2", 0.2, 2)], settings=settings
    )
    registry.create_endpoint("e1", "c1", settings=settings)
    return "e1"


def test_create_reaches_in_service(deployed: str, settings: Settings) -> None:
    described = registry.describe_endpoint(deployed, settings=settings)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "c1"
    assert described["Version"] == 1
    assert "FailureReason" not in described
    assert [
        (v["VariantName"], v["ModelName"], v["CurrentWeight"], v["CurrentInstanceCount"])
        for v in described["ProductionVariants"]
    ] == [("A", "m1", 0.8, 1), ("B", "m2", 0.2, 2)]


def test_resolve_gives_local_model_folders(
    deployed: str, settings: Settings, tmp_path: Path
) -> None:
    resolved = registry.resolve_endpoint(deployed, settings=settings)
    assert (resolved.name, resolved.status, resolved.config_name, resolved.version) == (
        "e1",
        "InService",
        "c1",
        1,
    )
    assert resolved.servable
    assert [
        (v.variant_name, v.model_name, v.weight, v.instance_count) for v in resolved.variants
    ] == [
        ("A", "m1", 0.8, 1),
        ("B", "m2", 0.2, 2),
    ]
    for resolved_variant in resolved.variants:
        assert resolved_variant.model_dir == tmp_path / "artifacts" / resolved_variant.model_name
        assert (resolved_variant.model_dir / "model.onnx").is_file()
    assert [e.name for e in registry.list_endpoints(settings=settings)] == ["e1"]


def test_update_switches_config_and_bumps_version(
    deployed: str, model: Callable[[str], str], settings: Settings
) -> None:
    model("m3")
    registry.create_endpoint_config("c2", [variant("C", "m3")], settings=settings)
    registry.update_endpoint(deployed, "c2", settings=settings)
    described = registry.describe_endpoint(deployed, settings=settings)
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "c2")
    assert described["Version"] == 2
    resolved = registry.resolve_endpoint(deployed, settings=settings)
    assert [v.variant_name for v in resolved.variants] == ["C"]
    with pytest.raises(ConflictError, match="in use"):
        registry.delete_endpoint_config("c2", settings=settings)
    registry.delete_endpoint_config("c1", settings=settings)  # no longer in use


def test_failed_update_keeps_old_config_serving(
    deployed: str, model: Callable[[str], str], settings: Settings, tmp_path: Path
) -> None:
    model("m3")
    registry.create_endpoint_config("c2", [variant("C", "m3")], settings=settings)
    (tmp_path / "artifacts" / "m3" / "model.onnx").write_bytes(b"a different graph")
    registry.update_endpoint(deployed, "c2", settings=settings)
    described = registry.describe_endpoint(deployed, settings=settings)
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "c1")
    assert described["Version"] == 1
    assert "changed since model 'm3' was created" in described["FailureReason"]
    assert "still serving c1" in described["FailureReason"]


def test_create_with_missing_artifacts_fails_with_reason(
    model: Callable[[str], str], settings: Settings, tmp_path: Path
) -> None:
    model("m1")
    registry.create_endpoint_config("c1", [variant("A", "m1")], settings=settings)
    (tmp_path / "artifacts" / "m1" / "model.onnx").unlink()
    registry.create_endpoint("e1", "c1", settings=settings)
    described = registry.describe_endpoint("e1", settings=settings)
    assert described["EndpointStatus"] == "Failed"
    assert "variant A (model m1)" in described["FailureReason"]
    assert "missing" in described["FailureReason"]
    resolved = registry.resolve_endpoint("e1", settings=settings)
    assert not resolved.servable
    with pytest.raises(ConflictError, match=r"Failed.*delete it"):
        registry.update_endpoint("e1", "c1", settings=settings)


def test_delete_then_recreate_from_stored_config(deployed: str, settings: Settings) -> None:
    registry.record_invocations(deployed, "A", 5, 10.0, settings=settings)
    registry.delete_endpoint(deployed, settings=settings)
    with pytest.raises(NotFoundError, match="none yet"):
        registry.describe_endpoint(deployed, settings=settings)
    assert registry.list_endpoints(settings=settings) == []
    registry.create_endpoint(deployed, "c1", settings=settings)
    described = registry.describe_endpoint(deployed, settings=settings)
    assert described["EndpointStatus"] == "InService"
    assert described["ProductionVariants"][0]["InvocationCount"] == 0  # stats went with it


def test_duplicate_and_unknown_names(deployed: str, settings: Settings) -> None:
    with pytest.raises(ConflictError, match="exists already"):
        registry.create_endpoint(deployed, "c1", settings=settings)
    with pytest.raises(NotFoundError, match="no endpoint config named 'c9'; existing: c1"):
        registry.create_endpoint("e2", "c9", settings=settings)
    with pytest.raises(NotFoundError, match="no endpoint named 'e9'; existing: e1"):
        registry.resolve_endpoint("e9", settings=settings)
    with pytest.raises(NotFoundError, match="existing: e1"):
        registry.update_endpoint("e9", "c1", settings=settings)
    with pytest.raises(NotFoundError, match="existing: e1"):
        registry.delete_endpoint("e9", settings=settings)
    with pytest.raises(InvalidInputError, match="endpoint name"):
        registry.create_endpoint("bad/name", "c1", settings=settings)


def test_endpoints_survive_a_restart(deployed: str, bcd_home: Path) -> None:
    db.dispose_engines()
    fresh = Settings(home=bcd_home)
    resolved = registry.resolve_endpoint(deployed, settings=fresh)
    assert (resolved.status, resolved.version, len(resolved.variants)) == ("InService", 1, 2)


def test_invocation_stats_accumulate(deployed: str, settings: Settings) -> None:
    registry.record_invocations(deployed, "A", 10, 50.0, errors=1, settings=settings)
    registry.record_invocations(deployed, "A", 30, 70.0, settings=settings)
    registry.record_invocations(deployed, "B", 0, 0.0, settings=settings)
    variants = {
        v["VariantName"]: v
        for v in registry.describe_endpoint(deployed, settings=settings)["ProductionVariants"]
    }
    assert variants["A"]["InvocationCount"] == 40
    assert variants["A"]["InvocationErrors"] == 1
    assert variants["A"]["AverageLatencyMs"] == pytest.approx(3.0)
    assert variants["B"]["InvocationCount"] == 0
    assert variants["B"]["AverageLatencyMs"] is None


def test_concurrent_stats_lose_nothing(deployed: str, settings: Settings) -> None:
    def flush(variant_name: str) -> None:
        for _ in range(10):
            registry.record_invocations(deployed, variant_name, 3, 1.5, settings=settings)

    threads = [threading.Thread(target=flush, args=(name,)) for name in ("A", "A", "B", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = {
        v["VariantName"]: v["InvocationCount"]
        for v in registry.describe_endpoint(deployed, settings=settings)["ProductionVariants"]
    }
    assert counts == {"A": 60, "B": 60}


def test_stats_of_a_deleted_endpoint_are_dropped(deployed: str, settings: Settings) -> None:
    registry.delete_endpoint(deployed, settings=settings)
    registry.record_invocations(deployed, "A", 3, 1.0, settings=settings)  # no error
    registry.create_endpoint(deployed, "c1", settings=settings)
    variants = registry.describe_endpoint(deployed, settings=settings)["ProductionVariants"]
    assert variants[0]["InvocationCount"] == 0


@pytest.mark.parametrize(
    ("count", "latency", "errors"),
    [(-1, 1.0, 0), (1, -1.0, 0), (1, float("inf"), 0), (1, 1.0, 2), (1.5, 1.0, 0)],
)
def test_bad_stats_are_refused(
    deployed: str, settings: Settings, count: object, latency: float, errors: int
) -> None:
    with pytest.raises(InvalidInputError):
        registry.record_invocations(deployed, "A", count, latency, errors, settings)  # type: ignore[arg-type]


@pytest.fixture
def remote_model(settings: Settings) -> Iterator[str]:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/store/remote/model.json", json.dumps(MODEL_JSON).encode())
    fs.pipe("/store/remote/model.onnx", b"remote-graph")
    registry.create_model("remote", model_data="memory://store/remote", settings=settings)
    yield "remote"
    fs.rm("/store", recursive=True)


def test_remote_artifacts_are_downloaded_to_the_cache(
    remote_model: str, settings: Settings, bcd_home: Path
) -> None:
    registry.create_endpoint_config("c1", [variant("A", remote_model)], settings=settings)
    registry.create_endpoint("e1", "c1", settings=settings)
    (resolved_variant,) = registry.resolve_endpoint("e1", settings=settings).variants
    cache = bcd_home / "cache" / "models" / "remote"
    assert resolved_variant.model_dir == cache
    assert (cache / "model.onnx").read_bytes() == b"remote-graph"
    assert json.loads((cache / "model.json").read_text()) == MODEL_JSON
    # A machine without the cache (wiped here) fetches it again when resolving.
    for file in cache.iterdir():
        file.unlink()
    cache.rmdir()
    assert registry.resolve_endpoint("e1", settings=settings).variants[0].model_dir == cache
    assert (cache / "model.onnx").is_file()
    registry.delete_endpoint("e1", settings=settings)
    registry.delete_endpoint_config("c1", settings=settings)
    registry.delete_model(remote_model, settings=settings)
    assert not cache.exists()


def _dead_owner() -> str:
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return f"{socket.gethostname()}:{process.stdout.strip()}"


def _set(settings: Settings, name: str, **values: object) -> None:
    with db.session_scope(settings) as session:
        record = session.get(EndpointRecord, name)
        for key, value in values.items():
            setattr(record, key, value)


def test_interrupted_create_is_finished_by_the_next_reader(
    deployed: str, settings: Settings
) -> None:
    _set(settings, deployed, status="Creating", version=0, operation_owner=_dead_owner())
    described = registry.describe_endpoint(deployed, settings=settings)
    assert (described["EndpointStatus"], described["Version"]) == ("InService", 1)


def test_interrupted_update_is_finished(
    deployed: str, model: Callable[[str], str], settings: Settings
) -> None:
    model("m3")
    registry.create_endpoint_config("c2", [variant("C", "m3")], settings=settings)
    _set(
        settings,
        deployed,
        status="Updating",
        pending_config_name="c2",
        operation_owner=_dead_owner(),
    )
    resolved = registry.resolve_endpoint(deployed, settings=settings)
    assert (resolved.status, resolved.config_name, resolved.version) == ("InService", "c2", 2)


def test_interrupted_delete_is_finished(deployed: str, settings: Settings) -> None:
    _set(settings, deployed, status="Deleting", operation_owner=_dead_owner())
    with pytest.raises(NotFoundError):
        registry.describe_endpoint(deployed, settings=settings)


def test_a_live_operation_is_left_alone(deployed: str, settings: Settings) -> None:
    live_owner = f"{socket.gethostname()}:1"  # pid 1 always runs
    _set(
        settings, deployed, status="Updating", pending_config_name="c1", operation_owner=live_owner
    )
    described = registry.describe_endpoint(deployed, settings=settings)
    assert described["EndpointStatus"] == "Updating"
    assert described["PendingDeploymentSummary"]["EndpointConfigName"] == "c1"
    assert registry.resolve_endpoint(deployed, settings=settings).servable
    with pytest.raises(ConflictError, match="Updating"):
        registry.update_endpoint(deployed, "c1", settings=settings)
