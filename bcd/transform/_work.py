"""One chunk of a transform job: read it, score it with ONNX Runtime, return its records.

The same function runs in the local runner and inside Ray tasks, so a chunk
gives the same records wherever it runs. Scoring goes through
:class:`bcd.serving.ModelRuntime` (the serving runtime, no torch), loaded
once per process and kept for the next chunk.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bcd.errors import BcdError
from bcd.transform._inputs import SLIDES, InputPlan, PatchChunk, read_patches
from bcd.transform._outputs import OutputFolder

logger = logging.getLogger(__name__)

_RUNTIMES: dict[tuple[str, int, int], Any] = {}
_RUNTIMES_LOCK = threading.Lock()
DETECTED, NOT_DETECTED = "Cancer detected", "Cancer not detected"


@dataclass(frozen=True)
class WorkContext:
    """Everything a worker needs to score chunks (picklable, for Ray).

    Attributes:
        plan: The input plan.
        model_dir: Local model folder (``model.json`` + ONNX).
        output_url: The job's output folder.
        batch_size: Patches per inference call (1 for ``SingleRecord``).
        threads: ONNX Runtime intra-op threads.
        storage_options: fsspec options of remote output URLs.
    """

    plan: InputPlan
    model_dir: str
    output_url: str
    batch_size: int
    threads: int
    storage_options: dict[str, Any]


def runtime_for(context: WorkContext) -> Any:
    """The process's :class:`bcd.serving.ModelRuntime` for this context's model."""
    from bcd.serving._runtime import ModelRuntime

    key = (context.model_dir, context.batch_size, context.threads)
    with _RUNTIMES_LOCK:
        runtime: Any = _RUNTIMES.get(key)
        if runtime is None:
            for stale in _RUNTIMES.values():
                stale.close()
            _RUNTIMES.clear()
            runtime = ModelRuntime(
                context.model_dir,
                threads=context.threads,
                max_batch_size=max(1, context.batch_size),
                max_wait_ms=0.0,
                name="transform",
            )
            _RUNTIMES[key] = runtime
        return runtime


def close_runtimes() -> None:
    """Release the ONNX Runtime sessions this process holds."""
    with _RUNTIMES_LOCK:
        for runtime in _RUNTIMES.values():
            runtime.close()
        _RUNTIMES.clear()


def score_patches(runtime: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``(N, 50, 50, 3)`` uint8 → ``(N, 2)`` probabilities, ``batch_size`` per call."""
    if not len(images):
        return np.empty((0, 2), dtype=np.float64)
    parts = [
        runtime.predict(images[start : start + batch_size], tta=False)
        for start in range(0, len(images), batch_size)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _patch_records(chunk: PatchChunk, probabilities: np.ndarray, threshold: float) -> list[dict]:
    records: list[dict[str, Any]] = []
    scored = iter(probabilities[:, 1].tolist())
    for position, index in enumerate(chunk.indices):
        record: dict[str, Any] = {"index": index, "source": chunk.sources[position]}
        if chunk.readable[position]:
            probability = next(scored)
            detected = probability >= threshold
            record.update(
                status="ok",
                reason="",
                probability_idc=round(probability, 6),
                predicted_class=int(detected),
                cancer_detected=detected,
                message=DETECTED if detected else NOT_DETECTED,
            )
        else:
            record.update(
                status="failed",
                reason=chunk.reasons[position],
                probability_idc=None,
                predicted_class=None,
                cancer_detected=None,
                message=None,
            )
        record.update(chunk.meta[position])
        records.append(record)
    return records


def _slide_record(context: WorkContext, index: int, runtime: Any) -> dict[str, Any]:
    from bcd.slides import AnalysisOptions, analyze_file

    relative = context.plan.sources[index]
    record: dict[str, Any] = {"index": index, "source": relative}
    spec = runtime.spec
    facts = {
        "model": Path(context.model_dir).name,
        "decision_threshold": spec.decision_threshold,
        "slide_context": spec.slide_context.to_json() if spec.slide_context else None,
    }
    folder = f"slides/{index:05d}-{Path(relative).stem}"[:120]
    output = OutputFolder(context.output_url, context.storage_options)
    try:
        with tempfile.TemporaryDirectory(prefix="bcd-transform-") as staging:
            out_dir = output.path(folder) if output.is_local else staging
            report = analyze_file(
                Path(context.plan.root) / relative,
                lambda tiles: runtime.predict(tiles, tta=False),
                out_dir,
                options=AnalysisOptions(batch_size=context.batch_size),
                model=facts,
            )
            output.put_folder(staging, folder)
    except (BcdError, OSError, ValueError) as error:
        record.update(status="failed", reason=getattr(error, "message", None) or str(error))
        return record
    positive = report["tiles"]["idc_positive"]
    record.update(
        status="ok",
        reason="",
        cancer_detected=positive > 0,
        message=DETECTED if positive > 0 else NOT_DETECTED,
        tissue_tiles=report["tiles"]["tissue"],
        idc_positive_tiles=positive,
        idc_positive_fraction=report["idc_positive_fraction"],
        idc_area_mm2=report["idc_area_mm2"],
        tissue_area_mm2=report["tissue_area_mm2"],
        threshold=report["analysis"]["threshold"],
        report=f"{folder}/report.json",
    )
    return record


def read_chunk(context: WorkContext, start: int, stop: int) -> PatchChunk | None:
    """Read records ``[start, stop)`` of a patch input (``None`` for slides, read when scored)."""
    if context.plan.kind == SLIDES:
        return None
    return read_patches(context.plan, start, stop, threads=max(2, context.threads))


def score_read_chunk(
    context: WorkContext, start: int, stop: int, chunk: PatchChunk | None
) -> list[dict[str, Any]]:
    """Score a chunk read by :func:`read_chunk`; returns one record per input record."""
    runtime = runtime_for(context)
    if chunk is None:
        return [_slide_record(context, index, runtime) for index in range(start, stop)]
    probabilities = score_patches(runtime, chunk.images, max(1, context.batch_size))
    return _patch_records(chunk, probabilities, float(runtime.spec.decision_threshold))


def score_chunk(context: WorkContext, start: int, stop: int) -> list[dict[str, Any]]:
    """Read, score and describe records ``[start, stop)`` of the input.

    Args:
        context: The job's work context.
        start: First record.
        stop: One past the last record.

    Returns:
        One record dict per input record, in order; a record that could not
        be read or analysed has ``status`` ``failed`` and its ``reason``.
    """
    return score_read_chunk(context, start, stop, read_chunk(context, start, stop))
