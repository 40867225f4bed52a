"""Running a transform job: plan, skip finished chunks, score the rest, assemble.

:func:`run_job` does the whole job in the calling process (the detached
``python -m bcd.transform NAME`` process, or a test). Chunks are scored by one
of two executors: ``local`` (this process, reading the next chunk while the
current one is scored) or ``ray`` (one ``ray.remote`` task per chunk, at most
``InstanceCount`` in flight). Either way the driver writes each finished
chunk's file and counts it in the store, so a job killed at any point resumes
from its last finished chunk.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bcd.config import Settings
from bcd.errors import BcdError
from bcd.transform import _store
from bcd.transform._inputs import SLIDES, plan_input
from bcd.transform._outputs import PATCH_COLUMNS, SLIDE_COLUMNS, OutputFolder
from bcd.transform._spec import TransformSpec, parse_request
from bcd.transform._work import WorkContext, close_runtimes, read_chunk, score_read_chunk

logger = logging.getLogger(__name__)

#: ``on_done(chunk_index, records)``, called in the driver for each finished chunk.
OnDone = Callable[[int, list[dict[str, Any]]], None]
ShouldStop = Callable[[], bool]


def _model_facts(model_dir: Path) -> tuple[str, float]:
    """SHA-256 over ``model.json`` and the ONNX file, and the decision threshold."""
    from bcd.serving._model_spec import load_model_spec

    spec = load_model_spec(model_dir)
    digest = hashlib.sha256((model_dir / "model.json").read_bytes())
    with open(spec.onnx_path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest(), float(spec.decision_threshold)


def _local_chunks(
    context: WorkContext, pending: list[tuple[int, int, int]], should_stop: ShouldStop
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Score chunks here, reading chunk k + 1 in a thread while chunk k is scored."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="transform-read") as reader:
        upcoming: Future[Any] | None = None
        for position, (index, start, stop) in enumerate(pending):
            if should_stop():
                return
            chunk = upcoming.result() if upcoming is not None else read_chunk(context, start, stop)
            upcoming = None
            if position + 1 < len(pending) and not should_stop():
                _, next_start, next_stop = pending[position + 1]
                upcoming = reader.submit(read_chunk, context, next_start, next_stop)
            yield index, score_read_chunk(context, start, stop, chunk)


def _score_remote(context: WorkContext, start: int, stop: int) -> list[dict[str, Any]]:
    from bcd.transform._work import score_chunk

    return score_chunk(context, start, stop)


def _ray_chunks(
    context: WorkContext,
    pending: list[tuple[int, int, int]],
    should_stop: ShouldStop,
    instance_count: int,
    address: str | None,
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Score chunks as Ray tasks, at most ``instance_count`` at a time."""
    from bcd.errors import require

    require("ray", "ray")
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cpus // instance_count)
    task = ray.remote(_score_remote).options(num_cpus=threads, max_retries=2)
    remote_context = WorkContext(**{**context.__dict__, "threads": threads})
    queue = list(pending)
    in_flight: dict[Any, int] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < instance_count and not should_stop():
                index, start, stop = queue.pop(0)
                in_flight[task.remote(remote_context, start, stop)] = index
            if not in_flight:
                return
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            index = in_flight.pop(ready[0])
            yield index, ray.get(ready[0])
    finally:
        for reference in in_flight:
            ray.cancel(reference)


def _context(spec: TransformSpec, plan: Any, model_dir: Path, settings: Settings) -> WorkContext:
    from bcd.serving._runtime import available_cores

    return WorkContext(
        plan=plan,
        model_dir=str(model_dir),
        output_url=spec.output_path,
        batch_size=1 if spec.batch_strategy == "SingleRecord" else settings.max_batch_size,
        threads=available_cores(),
        storage_options=settings.storage_options(),
    )


def _execute(
    name: str, spec: TransformSpec, settings: Settings, stop_event: threading.Event
) -> str:
    from bcd.evaluation._resolve import resolve_model

    target = resolve_model(spec.model_name, settings)
    plan = plan_input(spec.input_uri, spec.content_type, spec.max_payload_mb, settings)
    model_sha256, threshold = _model_facts(target.model_dir)
    output = OutputFolder(spec.output_path, settings.storage_options())
    output.claim({**plan.to_json(), "model_sha256": model_sha256, "threshold": threshold})
    chunks = plan.chunks()
    done = output.done_chunks() & set(range(len(chunks)))
    finished = [output.read_chunk(index) for index in sorted(done)]
    _store.set_progress(
        name,
        settings,
        input_kind=plan.kind,
        chunks_total=len(chunks),
        chunks_done=len(done),
        records_total=plan.count,
        records_done=sum(len(records) for records in finished),
        records_failed=sum(r["status"] != "ok" for records in finished for r in records),
    )
    if done:
        logger.info("transform %s resumes: %d of %d chunks done", name, len(done), len(chunks))
    pending = [(index, *chunks[index]) for index in range(len(chunks)) if index not in done]

    def should_stop() -> bool:
        return stop_event.is_set() or _store.status(name, settings) == _store.STOPPING

    context = _context(spec, plan, target.model_dir, settings)
    started = time.perf_counter()
    if spec.executor == "ray":
        results = _ray_chunks(
            context, pending, should_stop, spec.instance_count, settings.ray_address
        )
    else:
        results = _local_chunks(context, pending, should_stop)
    for index, records in results:
        output.write_chunk(index, records)
        _store.chunk_finished(
            name, settings, len(records), sum(r["status"] != "ok" for r in records)
        )
        done.add(index)
    if len(done) < len(chunks):
        return _store.STOPPED
    columns = SLIDE_COLUMNS if plan.kind == SLIDES else PATCH_COLUMNS
    counts = output.assemble(len(chunks), spec.results_file, columns)
    output.write_summary(
        {
            "transform_job": name,
            "model": {"reference": spec.model_name, "sha256": model_sha256},
            "input": {"uri": spec.input_uri, "kind": plan.kind, "identity": plan.identity},
            "records": counts["records"],
            "failed": counts["failed"],
            "chunks": len(chunks),
            "results": spec.results_file,
            "executor": spec.executor,
            "seconds_this_run": round(time.perf_counter() - started, 3),
        }
    )
    return _store.COMPLETED


def run_job(name: str, settings: Settings, stop_event: threading.Event | None = None) -> str:
    """Run transform job ``name`` in this process until it ends.

    Args:
        name: A recorded job (``InProgress``; its finished chunks are kept).
        settings: Where the store and the data are.
        stop_event: Set it to stop after the chunk being scored.

    Returns:
        The final status: ``Completed``, ``Stopped`` or ``Failed``.
    """
    stop_event = stop_event or threading.Event()
    record = _store.get(name, settings)
    _store.mark_running(name, settings)
    try:
        spec = parse_request(record.request, record.executor)
        status = _execute(name, spec, settings, stop_event)
    except BcdError as error:
        logger.warning("transform %s failed: %s", name, error.message)
        return _store.finish(name, settings, _store.FAILED, f"ClientError: {error.message}")
    except Exception as error:
        logger.exception("transform %s crashed", name)
        return _store.finish(name, settings, _store.FAILED, f"InternalError: {error!r}")
    finally:
        close_runtimes()
    return _store.finish(name, settings, status)
