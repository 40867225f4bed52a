"""Slide analyses as stored jobs: upload, queue, analyse in the background, report.

Like SageMaker's asynchronous inference: a caller hands over a slide, gets an
id at once, and polls. The slide and its outputs live under
``$BCD_HOME/slides/<id>/``; the ``slide_analyses`` row holds status, progress
and the report. An upload whose tile grid is over ``BCD_MAX_SLIDE_TILES`` is
refused before it is queued. Up to ``BCD_SLIDE_WORKERS`` analyses run at once
in daemon worker threads of the serving process, taking turns at the model
one batch of tiles at a time (:class:`~bcd.slides._admission.FairTurns`);
a server that stops mid-analysis leaves the row ``InProgress`` with its
process named in ``worker``, and the next service started on that store marks
it ``Failed`` (never left "running").
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from bcd._process import is_alive, process_start_time
from bcd.config import Settings
from bcd.db import session_scope, utcnow
from bcd.errors import BcdError, ConflictError, InvalidInputError, NotFoundError
from bcd.names import validate_name
from bcd.slides._admission import FairTurns, planned_grid
from bcd.slides._analysis import AnalysisOptions, Predict
from bcd.slides._grid import check_tile_limit
from bcd.slides._outputs import OUTPUT_FILES
from bcd.slides._patches import load_truth
from bcd.slides._pipeline import analyze_file
from bcd.slides._tables import SlideAnalysisRecord

logger = logging.getLogger(__name__)

IN_PROGRESS, COMPLETED, FAILED = "InProgress", "Completed", "Failed"
#: ``predictor_for(endpoint)`` → ``(predict, facts about the model for the report)``.
PredictorFactory = Callable[[str], tuple[Predict, dict[str, Any]]]
_PROGRESS_EVERY_S = 0.5
_OPEN_READERS = 2


class _Cancelled(Exception):
    """Raised inside a running analysis whose record was deleted."""


def _process_identity() -> str:
    started = process_start_time() or 0.0
    return f"{socket.gethostname()}:{os.getpid()}:{started:.0f}"[:128]


def _process_alive(worker: str | None) -> bool:
    """Whether the process named by a ``worker`` string is still running here."""
    if not worker:
        return False
    try:
        host, pid, started = worker.rsplit(":", 2)
        if host != socket.gethostname()[: len(host)]:
            return True  # another machine's worker: not ours to judge
        return is_alive(int(pid), float(started))
    except ValueError:
        return False


def recover_interrupted_analyses(settings: Settings, identity: str | None = None) -> int:
    """Mark analyses left ``InProgress`` by a process that no longer runs as ``Failed``.

    Analyses of live processes (other serving workers beside this one) are
    left alone, so it is safe to call while other servers run on the store.

    Args:
        settings: Where the metadata store is.
        identity: This process's worker identity; its own analyses are skipped.

    Returns:
        How many were marked.
    """
    marked = 0
    with session_scope(settings) as session:
        rows = session.scalars(
            select(SlideAnalysisRecord).where(SlideAnalysisRecord.status == IN_PROGRESS)
        ).all()
        for row in rows:
            if (identity is not None and row.worker == identity) or _process_alive(row.worker):
                continue
            row.status = FAILED
            row.stage = "interrupted"
            row.failure_reason = (
                "the server stopped while this analysis was running; upload the slide again"
            )
            row.updated_at = row.finished_at = utcnow()
            marked += 1
    if marked:
        logger.warning("marked %d interrupted slide analyses as Failed", marked)
    return marked


class SlideAnalysisService:
    """Stores slides, runs their analyses in background threads, serves results.

    Args:
        settings: Where the metadata store and ``$BCD_HOME/slides`` are.
        predictor_for: Gives the tile classifier of an endpoint.
        workers: Analyses that run at once, taking turns at the model (default
            ``settings.slide_workers``); more wait in the queue, first come first served.

    Thread-safe: routes call it from many requests at once.
    """

    def __init__(
        self, settings: Settings, predictor_for: PredictorFactory, workers: int | None = None
    ) -> None:
        self.settings = settings
        self.root = settings.home / "slides"
        self.root.mkdir(parents=True, exist_ok=True)
        self._predictor_for = predictor_for
        self._identity = _process_identity()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancelled: set[str] = set()
        # model folder -> its explainer, or False where explanations are unavailable
        self._explainers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._readers: dict[str, tuple[Any, Any]] = {}
        self._readers_lock = threading.Lock()
        self._turns = FairTurns()
        count = settings.slide_workers if workers is None else workers
        self._threads = [
            threading.Thread(target=self._work, name=f"bcd-slide-{index}", daemon=True)
            for index in range(max(1, count))
        ]
        self.recover_interrupted()
        for thread in self._threads:
            thread.start()

    # -- uploads -----------------------------------------------------------

    def staging_path(self) -> Path:
        """A fresh path to stream an upload into, before :meth:`submit` takes it."""
        staging = self.root / ".uploads"
        staging.mkdir(parents=True, exist_ok=True)
        return staging / f"{uuid.uuid4().hex}.part"

    def submit(
        self,
        staged: Path,
        filename: str,
        endpoint: str,
        options: AnalysisOptions,
        truth: bytes | None = None,
    ) -> dict[str, Any]:
        """Take a staged upload and queue its analysis.

        Args:
            staged: The uploaded file (from :meth:`staging_path`), or a folder holding
                a DICOM series unpacked from one; moved, not copied.
            filename: The client's name for it (shown in reports only).
            endpoint: Endpoint whose model scores the tiles.
            options: Analysis options.
            truth: Optional ``truth.npy``/``truth.png`` content for per-slide metrics.

        Returns:
            The new analysis, as :meth:`describe` gives it.

        Raises:
            InvalidInputError: Bad endpoint name, options, truth, or an empty file.
            PayloadTooLargeError: The slide's tile grid is over ``settings.max_slide_tiles``.
        """
        options = replace(options, max_tiles=self.settings.max_slide_tiles)
        try:
            validate_name(endpoint, "endpoint name")
            options.validate()
            truth_map = load_truth(truth) if truth else None
            size = staged.stat().st_size
            if size == 0:
                raise InvalidInputError("the uploaded slide is empty; choose the file again")
        except BaseException:
            if staged.is_dir():
                shutil.rmtree(staged, ignore_errors=True)
            staged.unlink(missing_ok=True)
            raise
        from bcd.slides._pipeline import file_facts

        analysis_id = uuid.uuid4().hex
        folder = self.root / analysis_id
        folder.mkdir(parents=True)
        suffix = Path(filename).suffix.lower()[:10] if Path(filename).suffix else ""
        if staged.is_dir():
            suffix = ""  # an unpacked DICOM series: the folder is the slide
        slide_path = folder / f"slide{suffix}"
        os.replace(staged, slide_path)
        grid = planned_grid(slide_path, options)
        if grid is not None:
            try:
                check_tile_limit(grid, options.max_tiles)
            except BcdError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        if truth_map is not None:
            np.save(folder / "truth-input.npy", truth_map, allow_pickle=False)
        facts = file_facts(slide_path, filename)
        with session_scope(self.settings) as session:
            session.add(
                SlideAnalysisRecord(
                    id=analysis_id,
                    status=IN_PROGRESS,
                    stage="queued",
                    progress=0.0,
                    filename=Path(filename).name[:255] or "slide",
                    size_bytes=facts["size_bytes"],
                    sha256=facts["sha256"],
                    endpoint_name=endpoint,
                    has_truth=truth_map is not None,
                    options=asdict(options),
                    worker=self._identity,
                )
            )
        self._queue.put(analysis_id)
        logger.info("slide analysis %s queued (%d bytes)", analysis_id, facts["size_bytes"])
        return self.describe(analysis_id)

    # -- reading -----------------------------------------------------------

    def describe(self, analysis_id: str) -> dict[str, Any]:
        """Status, progress, file facts and (when completed) the report.

        Raises:
            NotFoundError: No analysis with that id.
        """
        with session_scope(self.settings) as session:
            return _as_dict(self._record(session, analysis_id), with_report=True)

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent analyses, newest first, without their full reports."""
        with session_scope(self.settings) as session:
            rows = session.scalars(
                select(SlideAnalysisRecord)
                .order_by(SlideAnalysisRecord.created_at.desc())
                .limit(max(1, min(limit, 1000)))
            ).all()
            return [_as_dict(row, with_report=False) for row in rows]

    def output_path(self, analysis_id: str, name: str) -> Path:
        """The path of one output of a completed analysis.

        Raises:
            NotFoundError: Unknown analysis, unknown output, or not produced.
            ConflictError: The analysis has not completed.
        """
        if name not in OUTPUT_FILES:
            raise NotFoundError(f"no output {name!r}; outputs are: {', '.join(OUTPUT_FILES)}")
        described = self.describe(analysis_id)
        if described["status"] != COMPLETED:
            raise ConflictError(
                f"analysis {analysis_id} is {described['status']}; outputs exist once it is "
                "Completed"
            )
        path = self.root / analysis_id / "outputs" / name
        if not path.is_file():
            raise NotFoundError(f"analysis {analysis_id} has no {name} (no ground truth given?)")
        return path

    def tile_png(self, analysis_id: str, row: int, col: int) -> bytes:
        """One tile of the slide as the model saw it, as PNG bytes.

        The last few slides stay open, so a gallery of tiles decodes a PNG
        slide once, not once per tile.

        Raises:
            NotFoundError: Unknown analysis; InvalidInputError: outside the grid.
        """
        import io

        from PIL import Image

        from bcd.slides._grid import read_tile

        described = self.describe(analysis_id)
        with self._readers_lock:
            reader, grid = self._open_reader(analysis_id, AnalysisOptions(**described["options"]))
            tile = read_tile(reader, grid, row, col)
        buffer = io.BytesIO()
        Image.fromarray(tile).save(buffer, format="PNG")
        return buffer.getvalue()

    def _open_reader(self, analysis_id: str, options: AnalysisOptions) -> tuple[Any, Any]:
        from bcd.slides._grid import plan_grid
        from bcd.slides.readers import open_slide

        cached = self._readers.pop(analysis_id, None)
        if cached is None:
            reader = open_slide(self._slide_path(analysis_id))
            grid = plan_grid(
                reader, stride=options.stride, mpp=options.mpp, target_mpp=options.model_mpp
            )
            cached = (reader, grid)
        self._readers[analysis_id] = cached
        while len(self._readers) > _OPEN_READERS:
            oldest = next(iter(self._readers))
            self._readers.pop(oldest)[0].close()
        return cached

    def _forget_reader(self, analysis_id: str) -> None:
        with self._readers_lock:
            cached = self._readers.pop(analysis_id, None)
        if cached is not None:
            cached[0].close()

    # -- deleting and recovery ----------------------------------------------

    def delete(self, analysis_id: str) -> None:
        """Delete an analysis, its slide and outputs; a running one is stopped.

        Raises:
            NotFoundError: No analysis with that id.
        """
        with session_scope(self.settings) as session:
            record = self._record(session, analysis_id)
            running = record.status == IN_PROGRESS
            session.delete(record)
        if running:
            with self._lock:
                self._cancelled.add(analysis_id)
        self._forget_reader(analysis_id)
        shutil.rmtree(self.root / analysis_id, ignore_errors=True)
        logger.info("slide analysis %s deleted", analysis_id)

    def recover_interrupted(self) -> int:
        """Mark analyses left ``InProgress`` by a stopped process as ``Failed``.

        Returns:
            How many were marked.
        """
        return recover_interrupted_analyses(self.settings, self._identity)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers after their current analysis (daemon threads: never blocks exit)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _record(session: Any, analysis_id: str) -> SlideAnalysisRecord:
        record = session.get(SlideAnalysisRecord, analysis_id) if _valid_id(analysis_id) else None
        if record is None:
            raise NotFoundError(f"no slide analysis {analysis_id!r}; list them with GET /slides")
        return record

    def _slide_path(self, analysis_id: str) -> Path:
        matches = sorted((self.root / analysis_id).glob("slide*"))
        if not matches:
            raise NotFoundError(f"the slide of analysis {analysis_id} is gone")
        return matches[0]

    def _update(self, analysis_id: str, **fields: Any) -> None:
        with session_scope(self.settings) as session:
            record = session.get(SlideAnalysisRecord, analysis_id)
            if record is None:
                raise _Cancelled(analysis_id)
            for key, value in fields.items():
                setattr(record, key, value)
            record.updated_at = utcnow()

    def _work(self) -> None:
        while True:
            analysis_id = self._queue.get()
            if analysis_id is None:
                return
            try:
                self._run(analysis_id)
            except _Cancelled:
                logger.info("slide analysis %s stopped: deleted", analysis_id)
                shutil.rmtree(self.root / analysis_id, ignore_errors=True)
            except Exception as error:
                reason = (
                    self._readable(analysis_id, error.message)
                    if isinstance(error, BcdError)
                    else f"internal error ({type(error).__name__}); the server log has details"
                )
                if not isinstance(error, BcdError):
                    logger.error("slide analysis %s failed", analysis_id, exc_info=error)
                try:
                    self._update(
                        analysis_id,
                        status=FAILED,
                        stage="failed",
                        failure_reason=reason,
                        finished_at=utcnow(),
                    )
                except _Cancelled:
                    shutil.rmtree(self.root / analysis_id, ignore_errors=True)
            finally:
                with self._lock:
                    self._cancelled.discard(analysis_id)

    def _readable(self, analysis_id: str, message: str) -> str:
        """A failure message that names the upload as its owner knows it, not our copy."""
        folder = self.root / analysis_id
        try:
            filename = self.describe(analysis_id)["filename"]
            stored = self._slide_path(analysis_id)
        except NotFoundError:
            return message
        return (
            message.replace(str(stored), filename)
            .replace(stored.name, filename)
            .replace(str(folder), "")
        )

    def _explainer(self, model_dir: str | None) -> Any:
        """Grad-CAM for the report's top tiles, or None where it cannot run (logged once)."""
        from bcd.errors import ExplanationsUnavailableError
        from bcd.slides._explain import explanations_supported, load_explainer

        if model_dir is None or explanations_supported() is not None:
            return None
        with self._lock:
            cached = self._explainers.get(model_dir)
        if cached is not None:
            return cached or None
        try:
            explainer: Any = load_explainer(model_dir)
        except ExplanationsUnavailableError as error:
            logger.info("slide reports without explanations: %s", error.message)
            explainer = False
        with self._lock:
            self._explainers[model_dir] = explainer
        return explainer or None

    def _run(self, analysis_id: str) -> None:
        described = self.describe(analysis_id)
        self._update(analysis_id, stage="loading model", worker=self._identity)
        predict, model = self._predictor_for(described["endpoint"])
        model = dict(model)
        explainer = self._explainer(model.pop("model_dir", None))
        predict = self._turns.wrap(predict)
        options = AnalysisOptions(**described["options"])
        folder = self.root / analysis_id
        truth_path = folder / "truth-input.npy"
        truth = np.load(truth_path, allow_pickle=False) if truth_path.is_file() else None
        last = [0.0]

        def progress(done: int, total: int) -> None:
            with self._lock:
                if analysis_id in self._cancelled:
                    raise _Cancelled(analysis_id)
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_EVERY_S or done == total:
                last[0] = now
                fraction = done / total if total else 1.0
                self._update(
                    analysis_id, stage="analysing tiles", progress=round(0.95 * fraction, 4)
                )

        self._update(analysis_id, stage="reading slide")
        partial = folder / "outputs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        report = analyze_file(
            self._slide_path(analysis_id),
            predict,
            partial,
            options=options,
            truth=truth,
            model=model,
            progress=progress,
            filename=described["filename"],
            explainer=explainer,
        )
        with self._lock:
            if analysis_id in self._cancelled:
                raise _Cancelled(analysis_id)
        os.replace(partial, folder / "outputs")
        self._update(
            analysis_id,
            status=COMPLETED,
            stage="completed",
            progress=1.0,
            report=report,
            finished_at=utcnow(),
        )
        logger.info(
            "slide analysis %s completed: %d tiles in %.1f s",
            analysis_id,
            report["tiles"]["tissue"],
            report["timings"]["seconds"],
        )


def _valid_id(analysis_id: str) -> bool:
    return len(analysis_id) == 32 and all(c in "0123456789abcdef" for c in analysis_id)


def _as_dict(record: SlideAnalysisRecord, with_report: bool) -> dict[str, Any]:
    report = record.report or None
    summary = None
    if report:
        summary = {
            "idc_positive_fraction": report.get("idc_positive_fraction"),
            "tissue_tiles": report.get("tiles", {}).get("tissue"),
            "auc": (report.get("ground_truth") or {}).get("auc"),
        }
    document: dict[str, Any] = {
        "id": record.id,
        "status": record.status,
        "stage": record.stage,
        "progress": record.progress,
        "filename": record.filename,
        "size_bytes": record.size_bytes,
        "sha256": record.sha256,
        "endpoint": record.endpoint_name,
        "has_truth": record.has_truth,
        "options": dict(record.options),
        "failure_reason": record.failure_reason,
        "created": record.created_at.isoformat(timespec="seconds"),
        "updated": record.updated_at.isoformat(timespec="seconds"),
        "finished": record.finished_at.isoformat(timespec="seconds")
        if record.finished_at
        else None,
        "summary": summary,
    }
    if with_report:
        document["report"] = report
    return document
