"""Concurrent writers from several processes lose nothing, on SQLite and on PostgreSQL.

Four processes (two hosts' worth of job supervisors and servers), each with
several writer threads, create training jobs, append metric points to one
shared job and add invocation counters to one endpoint variant at once; the
totals must be exact afterwards.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from sqlalchemy import func, select

from bcd import db, registry
from bcd.config import Settings
from bcd.jobs import _store
from bcd.jobs._tables import TrainingJobMetric, TrainingJobRecord
from bcd.registry._tables import VariantStatsRecord
from tests.registry.helpers import variant, write_artifact

PROCESSES = 4
WRITERS = 4
ROUNDS = 8
POINTS = 5


def _job(name: str, settings: Settings) -> TrainingJobRecord:
    return TrainingJobRecord(
        name=name,
        algorithm="script",
        spec={},
        hyperparameters={},
        tags=[],
        status="InProgress",
        secondary_status="Starting",
        workdir=str(settings.home / "jobs" / name),
        host="test-host",
    )


def _write(settings: Settings, process: int, writer: int) -> None:
    for round_ in range(ROUNDS):
        _store.insert_job(_job(f"p{process}-w{writer}-r{round_}", settings), settings)
        first = ((process * WRITERS + writer) * ROUNDS + round_) * POINTS
        points = [
            ("algorithm", "train:loss", 1.0 / (step + 1), step, None, db.utcnow())
            for step in range(first, first + POINTS)
        ]
        _store.add_metrics("shared-job", points, settings)
        registry.record_invocations("shared-ep", "AllTraffic", 3, 4.5, errors=1, settings=settings)


def _process_main(home: str, url: str, process: int) -> None:
    settings = Settings(home=Path(home), database_url=url)
    failures: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            _write(settings, process, writer)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"writer failed: {failures[0]!r}")


def test_concurrent_writers_lose_nothing(store_settings: Settings, tmp_path: Path) -> None:
    settings = store_settings
    _store.insert_job(_job("shared-job", settings), settings)
    registry.create_model(
        "shared-model", model_data=str(write_artifact(tmp_path / "model")), settings=settings
    )
    registry.create_endpoint_config(
        "shared-cfg", [variant("AllTraffic", "shared-model")], settings=settings
    )
    registry.create_endpoint("shared-ep", "shared-cfg", settings=settings)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_process_main,
            args=(str(settings.home), settings.resolved_database_url, index),
        )
        for index in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    assert [process.exitcode for process in processes] == [0] * PROCESSES

    writes = PROCESSES * WRITERS * ROUNDS
    with db.session_scope(settings) as session:
        jobs = session.scalar(select(func.count()).select_from(TrainingJobRecord))
        steps = session.scalars(
            select(TrainingJobMetric.step).where(TrainingJobMetric.job_name == "shared-job")
        ).all()
        stats = session.scalars(
            select(VariantStatsRecord).where(VariantStatsRecord.endpoint_name == "shared-ep")
        ).all()
    assert jobs == writes + 1
    assert sorted(steps) == list(range(writes * POINTS))
    assert [(row.invocations, row.errors) for row in stats] == [(3 * writes, writes)]
    assert abs(stats[0].latency_ms_total - 4.5 * writes) < 1e-6
