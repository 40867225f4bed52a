"""Whole-slide throughput: end to end (read, mask, infer, heatmap) vs bare inference.

One run, two slides:

- a real reassembled patient slide from ../shared/data (~1,000 tissue tiles);
- a synthetic 100,000-tile slide, written as a tiled, pyramidal TIFF (once
  with zlib tiles and once with JPEG tiles, YCbCr 4:2:0 as scanners write
  them; ``--compression`` picks) and analysed in a child process whose peak
  RSS is reported (target: at least 3,300 tiles/s end to end, under 30 s for
  100,000 tiles, and a peak RSS under 1 GB).

"Bare inference" scores the very same tiles, already in memory, through the
same serving runtime (``ModelRuntime.predict``, same ONNX Runtime session and
threads) in batches of the same size; the ratio end-to-end / bare is the cost
of reading, tissue masking and the heatmap. End to end counts
opening (decoding) the file, the thumbnail and tissue mask, reading and
cutting the tiles, inference, and rendering and encoding ``heatmap.png``
(a PNG slide decodes on background threads while its top is scored, so the
"mask known at" time printed may include some inference).

The patient slide takes well under a second, so both measures run once to
warm up (the first analysis in a process also pays one-off costs such as
lazy imports and font loading; it is printed apart) and then ``--repeats``
times in alternation; the medians are compared, which keeps the other
processes of a shared machine from favouring either side.

Each synthetic slide also times bare inference on 5,120 of its tiles with
denormal floats flushed (as the runtime scores) and kept (a plain ONNX
Runtime session called from the main thread, as the runtime scored before),
three times in alternation, best of each.

The model is ``--model-dir`` if given, else the bundled model (``bcd/bundled``,
the one ``make run`` serves).

    .venv/bin/python bench/slide_bench.py [--patient 8863] [--tiles 100000] [--repeats 5]
        [--compression zlib,jpeg]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "IDC_regular_ps50_idx5"
BATCH = 256
#: Issue 18's target for the synthetic slide: tiles/s end to end, and peak RSS.
TARGET_TILES_PER_S = 3300
TARGET_RSS_MB = 1024
#: TIFF tile compressions the synthetic slide can be written with.
COMPRESSIONS = {
    "zlib": {"compression": "zlib", "compressionargs": {"level": 1}},
    "jpeg": {"compression": "jpeg", "compressionargs": {"level": 90}},
}


def bundled_model() -> tuple[Path, str]:
    """The model ``make run`` serves: ``bcd/bundled`` (ONNX + model.json)."""
    import bcd.bundled

    folder = Path(bcd.bundled.__file__).resolve().parent
    spec = json.loads((folder / "model.json").read_text())
    architecture = spec.get("hyperparameters", {}).get("architecture", "original")
    return folder, f"the bundled model ({spec['algorithm']}, architecture {architecture})"


def runtime_predict(model_dir: Path) -> Any:
    from bcd.serving import ModelRuntime

    runtime = ModelRuntime(model_dir, max_batch_size=BATCH, name="bench")
    runtime.warm()
    return lambda tiles: runtime.predict(list(tiles))


def denormals_kept_predict(model_dir: Path) -> Any:
    """Bare ONNX Runtime as the runtime ran it before flushing denormals (reference only).

    Same session options but ``session.set_denormal_as_zero``, called from this
    (main) thread, whose floats the runtime leaves alone.
    """
    import onnxruntime as ort

    from bcd.serving import ModelRuntime

    runtime = ModelRuntime(model_dir, max_batch_size=BATCH, name="reference")
    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(runtime.spec.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    spec, normalise = runtime.spec, runtime.preprocess.normalise
    runtime.close()
    return lambda tiles: session.run([spec.output_name], {spec.input_name: normalise(tiles)})


def end_to_end(slide: Path, predict: Any, out: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Open, mask, score and render the heatmap PNG; returns timings and the scored tiles' count."""
    from bcd.slides import AnalysisOptions, analyze_slide, encode_png, heatmap_image, open_slide

    started = time.perf_counter()
    with open_slide(slide) as reader:
        analysis = analyze_slide(reader, predict, AnalysisOptions(batch_size=BATCH))
        (out / "heatmap.png").write_bytes(encode_png(heatmap_image(analysis)))
    seconds = time.perf_counter() - started
    tiles = analysis.scored_tiles
    return {
        "tiles": tiles,
        "seconds": round(seconds, 4),
        "tiles_per_s": round(tiles / seconds, 1),
        "mask_seconds": round(analysis.seconds["mask"], 3),
    }, analysis.tissue


def collect_tiles(slide: Path, limit: int) -> np.ndarray:
    """The first ``limit`` tissue tiles exactly as the analysis feeds them to the model."""
    from bcd.slides import AnalysisOptions, analyze_slide, open_slide

    kept: list[np.ndarray] = []
    count = [0]

    class Enough(Exception):
        pass

    def keep(tiles: np.ndarray) -> np.ndarray:
        room = limit - count[0]
        kept.append(tiles[:room].copy())
        count[0] += min(room, len(tiles))
        if count[0] >= limit:
            raise Enough
        return np.full((len(tiles), 2), 0.5, dtype=np.float32)

    with open_slide(slide) as reader, contextlib.suppress(Enough):
        analyze_slide(reader, keep, AnalysisOptions(batch_size=BATCH))
    return np.concatenate(kept)


def bare(predict: Any, tiles: np.ndarray) -> dict[str, Any]:
    started = time.perf_counter()
    for start in range(0, len(tiles), BATCH):
        predict(tiles[start : start + BATCH])
    seconds = time.perf_counter() - started
    return {
        "tiles": len(tiles),
        "seconds": round(seconds, 4),
        "tiles_per_s": round(len(tiles) / seconds, 1),
    }


def measure_patient(patient: str, slide: Path, predict: Any, out: Path, repeats: int) -> None:
    """End to end vs bare on the patient slide: one warm-up each, then alternating runs."""
    tiles = collect_tiles(slide, 10**9)
    first, _ = end_to_end(slide, predict, out)
    bare(predict, tiles)
    runs: list[dict[str, Any]] = []
    bare_runs: list[dict[str, Any]] = []
    for _ in range(max(1, repeats)):
        runs.append(end_to_end(slide, predict, out)[0])
        bare_runs.append(bare(predict, tiles))
    seconds = statistics.median(run["seconds"] for run in runs)
    bare_seconds = statistics.median(run["seconds"] for run in bare_runs)
    mask = statistics.median(run["mask_seconds"] for run in runs)
    count = runs[0]["tiles"]
    print(f"patient {patient}: {count} tiles; medians of {len(runs)} alternating runs")
    print(f"  end to end {count / seconds:.1f} tiles/s in {seconds:.3f} s (mask known at {mask} s)")
    print(f"  bare inference {count / bare_seconds:.1f} tiles/s in {bare_seconds:.3f} s")
    print(f"  ratio {bare_seconds / seconds:.2f}")
    print(f"  first analysis in this process (cold): {first['seconds']} s")


def write_synthetic(path: Path, tiles: int, compression: str = "zlib") -> tuple[int, int]:
    """A tiled pyramidal TIFF of ``tiles`` 50 px tiles of tissue, written tile by tile."""
    import tifffile

    cols = round((tiles * 1.6) ** 0.5)
    rows = -(-tiles // cols)
    width, height = cols * 50, rows * 50
    block = 256
    rng = np.random.default_rng(0)
    noise = rng.integers(-12, 13, size=(block, block, 3), dtype=np.int16)

    def colour(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        # Pink stroma with purple, nuclei-dense islands, as smooth fields of position.
        field = np.sin(x / 900.0) * np.cos(y / 700.0) + 0.3 * np.sin((x + y) / 260.0)
        tumour = (field > 0.55)[..., None]
        return np.where(tumour, np.array([120, 60, 150]), np.array([225, 160, 205]))

    def level_tiles(step: int) -> Any:
        level_height, level_width = -(-height // step), -(-width // step)
        for top in range(0, level_height, block):
            for left in range(0, level_width, block):
                y, x = np.mgrid[top : top + block, left : left + block] * step
                pixels = colour(y, x) + (noise if step == 1 else 0)
                yield np.clip(pixels, 0, 255).astype(np.uint8)

    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        options = {"tile": (block, block), **COMPRESSIONS[compression]}
        writer.write(
            level_tiles(1), shape=(height, width, 3), dtype=np.uint8, subifds=2,
            resolution=(10_000 / 4.0, 10_000 / 4.0), resolutionunit="CENTIMETER", **options,
        )  # fmt: skip
        for step in (4, 16):  # the reduced levels of a typical scanner pyramid
            writer.write(
                level_tiles(step), shape=(-(-height // step), -(-width // step), 3),
                dtype=np.uint8, subfiletype=1, **options,
            )  # fmt: skip
    return width, height


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited on exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_synthetic(slide: Path, model_dir: Path, sample: int) -> None:
    """Child process: end to end on the big slide, bare inference on a sample, peak RSS."""
    predict = runtime_predict(model_dir)
    with tempfile.TemporaryDirectory() as out:
        result, _ = end_to_end(slide, predict, Path(out))
    result["peak_rss_mb"] = peak_rss_mb()
    tiles = collect_tiles(slide, sample)
    result["bare"] = bare(predict, tiles)
    # The same tiles with denormals kept and flushed, in alternation (best of 3 each).
    reference, kept_predict = tiles[: 20 * BATCH], denormals_kept_predict(model_dir)
    pairs = [(bare(kept_predict, reference), bare(predict, reference)) for _ in range(3)]
    result["denormals_kept"] = max((pair[0] for pair in pairs), key=lambda r: r["tiles_per_s"])
    result["denormals_flushed"] = max((pair[1] for pair in pairs), key=lambda r: r["tiles_per_s"])
    print(json.dumps(result))


def measure_synthetic(
    work: Path, model_dir: Path, args: argparse.Namespace, compression: str
) -> None:
    """Write the synthetic slide with ``compression`` tiles and analyse it in a child process."""
    started = time.perf_counter()
    big = work / f"synthetic-{compression}.tif"
    width, height = write_synthetic(big, args.tiles, compression)
    print(
        f"synthetic slide ({compression} tiles): {width}x{height} px, "
        f"{big.stat().st_size / 1e6:.0f} MB TIFF (written in {time.perf_counter() - started:.0f} s)"
    )
    child = subprocess.run(
        [sys.executable, __file__, "--run-synthetic", str(big), "--model-dir", str(model_dir),
         "--bare-sample", str(args.bare_sample)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    big.unlink()
    synthetic = json.loads(child.stdout.strip().splitlines()[-1])
    ratio = synthetic["tiles_per_s"] / synthetic["bare"]["tiles_per_s"]
    bare_part = synthetic["bare"]
    met = (
        synthetic["tiles_per_s"] >= TARGET_TILES_PER_S and synthetic["peak_rss_mb"] < TARGET_RSS_MB
    )
    print(f"synthetic ({compression}): {synthetic['tiles']} tiles")
    print(f"  end to end {synthetic['tiles_per_s']} tiles/s in {synthetic['seconds']} s")
    print(f"  (mask known at {synthetic['mask_seconds']} s)")
    print(f"  bare inference {bare_part['tiles_per_s']} tiles/s on {bare_part['tiles']} tiles")
    print(f"  ratio {ratio:.2f}; peak RSS {synthetic['peak_rss_mb']} MB")
    kept, flushed = synthetic["denormals_kept"], synthetic["denormals_flushed"]
    print(
        f"  bare inference on {kept['tiles']} tiles (best of 3 alternating), denormals "
        f"flushed / kept (as before): "
        f"{flushed['tiles_per_s']} / {kept['tiles_per_s']} tiles/s "
        f"(x{flushed['tiles_per_s'] / kept['tiles_per_s']:.2f})"
    )
    print(
        f"  target (>= {TARGET_TILES_PER_S} tiles/s, < {TARGET_RSS_MB} MB): "
        f"{'met' if met else 'not met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient", default="8863", help="patient slide; '' to skip it")
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--bare-sample", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, patient slide")
    parser.add_argument(
        "--compression", default="zlib,jpeg", help=f"synthetic slides' tile compressions, of "
        f"{','.join(COMPRESSIONS)}; '' to skip them",
    )  # fmt: skip
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--run-synthetic", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_synthetic:
        run_synthetic(args.run_synthetic, args.model_dir, args.bare_sample)
        return
    compressions = [name for name in args.compression.split(",") if name]
    unknown = sorted(set(compressions) - set(COMPRESSIONS))
    if unknown:
        parser.error(f"unknown compression {', '.join(unknown)}; choose from {list(COMPRESSIONS)}")

    from bcd.slides import reassemble_patient, write_reassembled

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model_dir, model_name = (
            (args.model_dir, str(args.model_dir)) if args.model_dir else bundled_model()
        )
        print(f"model: {model_name}")
        if args.patient:
            predict = runtime_predict(model_dir)
            paths = write_reassembled(reassemble_patient(DATA / args.patient), work / "patient")
            measure_patient(args.patient, paths["slide.png"], predict, work, args.repeats)
        for compression in compressions:
            measure_synthetic(work, model_dir, args, compression)


if __name__ == "__main__":
    main()
