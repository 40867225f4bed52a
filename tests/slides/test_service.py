"""The slide service: queued analyses, stored results, deletion, recovery after a crash."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bcd.config import Settings
from bcd.db import session_scope
from bcd.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from bcd.slides import AnalysisOptions
from bcd.slides._service import SlideAnalysisService
from bcd.slides._tables import SlideAnalysisRecord
from tests.slides.conftest import darkness_predict, synthetic_slide


def _wait(service: SlideAnalysisService, analysis_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = service.describe(analysis_id)
        if described["status"] != "InProgress":
            return described
        time.sleep(0.05)
    raise AssertionError("analysis did not finish")


@pytest.fixture
def service(settings: Settings) -> Iterator[SlideAnalysisService]:
    def predictor_for(endpoint: str) -> tuple[Any, dict[str, Any]]:
        if endpoint == "missing":
            raise NotFoundError("no endpoint 'missing'")
        return darkness_predict, {"endpoint": endpoint, "model": "darkness"}

    instance = SlideAnalysisService(settings, predictor_for)
    yield instance
    instance.close()


def _stage(service: SlideAnalysisService, image: np.ndarray) -> Path:
    staged = service.staging_path()
    Image.fromarray(image).save(staged, format="PNG", dpi=(6350, 6350))
    return staged


def test_submit_runs_in_the_background_and_stores_outputs(
    service: SlideAnalysisService, slide_image: np.ndarray, truth_map: np.ndarray
) -> None:
    import io

    truth = io.BytesIO()
    np.save(truth, truth_map)
    created = service.submit(
        _stage(service, slide_image), "case 1.png", "ep", AnalysisOptions(), truth=truth.getvalue()
    )
    assert created["status"] == "InProgress" and created["filename"] == "case 1.png"
    done = _wait(service, created["id"])
    assert done["status"] == "Completed" and done["progress"] == 1.0
    assert done["report"]["ground_truth"]["auc"] == 1.0
    assert done["report"]["model"] == {"endpoint": "ep", "model": "darkness"}
    assert service.output_path(created["id"], "heatmap.png").is_file()
    assert service.tile_png(created["id"], 5, 6).startswith(b"\x89PNG")
    listed = service.list()
    assert [item["id"] for item in listed] == [created["id"]]
    assert "report" not in listed[0] and listed[0]["summary"]["auc"] == 1.0
    assert not any((service.root / ".uploads").iterdir())


def test_unreadable_slide_fails_with_a_reason_naming_the_upload(
    service: SlideAnalysisService,
) -> None:
    staged = service.staging_path()
    staged.write_bytes(b"this is not a slide")
    created = service.submit(staged, "scan-042.png", "ep", AnalysisOptions())
    failed = _wait(service, created["id"])
    assert failed["status"] == "Failed"
    assert "scan-042.png is not an image" in failed["failure_reason"]
    with pytest.raises(ConflictError, match="Failed"):
        service.output_path(created["id"], "heatmap.png")


def test_unknown_endpoint_fails_the_analysis(
    service: SlideAnalysisService, slide_image: np.ndarray
) -> None:
    created = service.submit(_stage(service, slide_image), "a.png", "missing", AnalysisOptions())
    assert "no endpoint 'missing'" in _wait(service, created["id"])["failure_reason"]


def test_bad_requests_are_refused_and_the_upload_removed(
    service: SlideAnalysisService, slide_image: np.ndarray
) -> None:
    for kwargs, message in [
        ({"endpoint": "bad name!"}, "endpoint name"),
        ({"truth": b"junk"}, "ground truth"),
    ]:
        staged = _stage(service, slide_image)
        arguments = {"endpoint": "ep", "truth": None, **kwargs}
        with pytest.raises(InvalidInputError, match=message):
            service.submit(
                staged, "a.png", arguments["endpoint"], AnalysisOptions(), truth=arguments["truth"]
            )
        assert not staged.exists()
    empty = service.staging_path()
    empty.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        service.submit(empty, "a.png", "ep", AnalysisOptions())


def test_unknown_ids_and_outputs_are_not_found(
    service: SlideAnalysisService, slide_image: np.ndarray
) -> None:
    with pytest.raises(NotFoundError):
        service.describe("0" * 32)
    with pytest.raises(NotFoundError):
        service.describe("../../etc/passwd")
    created = service.submit(_stage(service, slide_image), "a.png", "ep", AnalysisOptions())
    _wait(service, created["id"])
    with pytest.raises(NotFoundError, match="outputs are"):
        service.output_path(created["id"], "../slide.png")
    with pytest.raises(NotFoundError, match=r"no comparison\.png"):
        service.output_path(created["id"], "comparison.png")


def test_delete_removes_record_and_files(
    service: SlideAnalysisService, slide_image: np.ndarray
) -> None:
    created = service.submit(_stage(service, slide_image), "a.png", "ep", AnalysisOptions())
    _wait(service, created["id"])
    service.delete(created["id"])
    assert not (service.root / created["id"]).exists()
    with pytest.raises(NotFoundError):
        service.describe(created["id"])


def test_delete_stops_a_running_analysis(settings: Settings, slide_image: np.ndarray) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(tiles: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(10)
        return darkness_predict(tiles)

    service = SlideAnalysisService(settings, lambda endpoint: (slow, {}))
    try:
        created = service.submit(
            _stage(service, slide_image), "a.png", "ep", AnalysisOptions(batch_size=8)
        )
        assert started.wait(10)
        service.delete(created["id"])
        release.set()
        deadline = time.monotonic() + 10
        while (service.root / created["id"]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (service.root / created["id"]).exists()
        assert service.list() == []
    finally:
        release.set()
        service.close()


def test_interrupted_analyses_are_marked_failed_on_restart(
    settings: Settings, slide_image: np.ndarray
) -> None:
    with session_scope(settings) as session:
        dead = f"{socket.gethostname()}:999999:1"
        rows = [("a" * 32, dead), ("b" * 32, None), ("c" * 32, "other-machine:1:1")]
        for analysis_id, worker in rows:
            session.add(
                SlideAnalysisRecord(
                    id=analysis_id,
                    status="InProgress",
                    stage="analysing tiles",
                    progress=0.4,
                    filename="x.png",
                    size_bytes=1,
                    sha256="0" * 64,
                    endpoint_name="ep",
                    has_truth=False,
                    options={},
                    worker=worker,
                )
            )
    service = SlideAnalysisService(settings, lambda endpoint: (darkness_predict, {}))
    try:
        for analysis_id in ("a" * 32, "b" * 32):
            described = service.describe(analysis_id)
            assert described["status"] == "Failed"
            assert "server stopped" in described["failure_reason"]
        # Another machine's analysis is not this server's to judge.
        assert service.describe("c" * 32)["status"] == "InProgress"
        # A live service's own running analyses are left alone by another start.
        created = service.submit(_stage(service, slide_image), "c.png", "ep", AnalysisOptions())
        assert (
            SlideAnalysisService(settings, lambda e: (darkness_predict, {})).recover_interrupted()
            == 0
        )
        _wait(service, created["id"])
    finally:
        service.close()


def test_a_slide_over_the_tile_limit_is_refused_before_it_is_queued(
    settings: Settings, slide_image: np.ndarray
) -> None:
    limited = settings.model_copy(update={"max_slide_tiles": 191})  # the slide has 192
    service = SlideAnalysisService(limited, lambda endpoint: (darkness_predict, {}))
    try:
        staged = _stage(service, slide_image)
        with pytest.raises(PayloadTooLargeError, match="192 tiles, over the limit of 191"):
            service.submit(staged, "a.png", "ep", AnalysisOptions())
        assert not staged.exists() and service.list() == []
        assert [path.name for path in service.root.iterdir()] == [".uploads"]
    finally:
        service.close()


def test_a_small_analysis_submitted_behind_a_large_one_finishes_first(
    settings: Settings,
) -> None:
    large_started = threading.Event()
    sizes: list[int] = []

    def slow(tiles: np.ndarray) -> np.ndarray:
        sizes.append(len(tiles))
        if len(tiles) == 16:
            large_started.set()
        time.sleep(0.03)  # each batch takes a while, as on a real model
        return darkness_predict(tiles)

    service = SlideAnalysisService(settings, lambda endpoint: (slow, {}))
    try:
        everything = AnalysisOptions(detect_tissue=False, batch_size=16)
        large = service.submit(
            _stage(service, synthetic_slide(40, 40)), "large.png", "ep", everything
        )  # 1,600 tiles: 100 batches, 3 s or more
        assert large_started.wait(30)
        small = service.submit(
            _stage(service, synthetic_slide(2, 2)), "small.png", "ep", everything
        )  # 4 tiles: one batch
        assert _wait(service, small["id"])["status"] == "Completed"
        assert service.describe(large["id"])["status"] == "InProgress"
        service.delete(large["id"])  # stops it at its next batch
    finally:
        service.close()
