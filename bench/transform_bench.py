"""Batch transform throughput against a bare ONNX Runtime session, in one run.

Imports the shared IDC patches (``../shared/data/IDC_regular_ps50_idx5``,
35,924 patches) as dataset ``idc`` into a temporary ``BCD_HOME`` (or
``--home``), then scores ``dataset://idc/all`` with the bundled model (or
``--model``) three ways and prints patches per second:

- baseline: one bare ``onnxruntime.InferenceSession`` on the same arrays, in
  batches of 256, normalising each batch with numpy (nothing else);
- transform: ``bcd transform`` as a user runs it: a detached process that
  plans the input, scores each chunk through the serving runtime and writes
  its results, then assembles ``results.csv`` (timed from create to Completed);
- transform (folder, with ``--folder``): the same over the loose PNG files,
  decoding included (no target: decoding PNGs costs more than scoring them).

Target: transform ≥ 0.8× the baseline.

    .venv/bin/python bench/transform_bench.py [--home DIR] [--model DIR] [--folder]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "IDC_regular_ps50_idx5"
TARGET = 0.8


def bare_ort(model_dir: Path, images: np.ndarray, threads: int) -> float:
    """Patches per second of a bare ONNX Runtime session, batches of 256."""
    import onnxruntime as ort

    from bcd.serving import load_model_spec

    spec = load_model_spec(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(spec.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)

    def run(pixels: np.ndarray) -> np.ndarray:
        batch = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / spec.scale - mean) / std
        return session.run([spec.output_name], {spec.input_name: batch})[0]

    run(np.asarray(images[:256]))  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), 256):
        run(np.asarray(images[start : start + 256]))
    return len(images) / (time.perf_counter() - started)


def transform(settings: object, name: str, model: Path, uri: str, out: Path) -> tuple[float, int]:
    """Seconds from create to Completed of a detached transform job, and its record count."""
    from bcd.transform import TransformJobService

    service = TransformJobService(settings)  # type: ignore[arg-type]
    started = time.perf_counter()
    service.create(
        {
            "TransformJobName": name,
            "ModelName": str(model),
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": uri}}},
            "TransformOutput": {"S3OutputPath": str(out)},
        }
    )
    while (job := service.describe(name))["TransformJobStatus"] in ("InProgress", "Stopping"):
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if job["TransformJobStatus"] != "Completed":
        raise SystemExit(f"{name} ended {job['TransformJobStatus']}: {job.get('FailureReason')}")
    return seconds, int(job["Progress"]["RecordsTotal"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="BCD_HOME to use (default: a temp folder)")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled model)")
    parser.add_argument("--source", type=Path, default=SHARED, help="patch tree to import")
    parser.add_argument("--folder", action="store_true", help="also transform the PNG folder")
    args = parser.parse_args()

    from bcd.bundled import MODEL_DIR
    from bcd.config import Settings
    from bcd.data import import_dataset, open_split
    from bcd.serving._runtime import available_cores

    home = args.home or Path(tempfile.mkdtemp(prefix="bcd-transform-bench-"))
    os.environ["BCD_HOME"] = str(home)
    settings = Settings(home=home)
    model = args.model or Path(MODEL_DIR)
    cores = available_cores()
    try:
        split = open_split("idc", "all", settings)
    except Exception:
        started = time.perf_counter()
        import_dataset(args.source, "idc", settings=settings, split=None)
        print(f"import: {time.perf_counter() - started:.1f} s")
        split = open_split("idc", "all", settings)
    images = split.images
    print(f"input: dataset://idc/all, {len(images)} patches; {cores} cores; model {model}")

    baseline = bare_ort(model, images, cores)
    print(f"baseline (bare ONNX Runtime, batches of 256): {baseline:,.0f} patches/s")
    stamp = time.strftime("%H%M%S")
    seconds, count = transform(
        settings, f"bench-{stamp}", model, "dataset://idc/all", home / f"out-{stamp}"
    )
    rate = count / seconds
    print(
        f"transform (dataset://idc/all, local executor): {count} patches in {seconds:.1f} s, "
        f"{rate:,.0f} patches/s"
    )
    ratio = rate / baseline
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"ratio transform / baseline: {ratio:.2f} (target ≥ {TARGET}: {verdict})")
    if args.folder:
        seconds, count = transform(
            settings, f"bench-folder-{stamp}", model, str(args.source), home / f"out-folder-{stamp}"
        )
        print(
            f"transform (PNG folder, decoding included): {count} files in {seconds:.1f} s, "
            f"{count / seconds:,.0f} files/s ({count / seconds / baseline:.2f}× baseline)"
        )


if __name__ == "__main__":
    main()
