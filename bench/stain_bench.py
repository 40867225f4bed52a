"""Serving cost of stain normalisation: ModelRuntime patches/s with and without it.

The bundled model is copied three times: as it is, and with a Reinhard and a
Macenko reference (``input.stain_normalization``) fitted on the patches below.
Each copy is loaded into :class:`bcd.serving.ModelRuntime` (``--threads``
intra-op threads, micro-batches of ``--batch``) and scored on the same real
patches (from ``../shared/data``; synthetic ones when it is absent), in
alternating rounds in one process, so the ratios against the plain model are
measured at the same time on the same machine. The stain step alone (on the
calling thread) is timed too. The target: ≥ 2,000 patches/s at batch 256 on
2 cores.

    .venv/bin/python bench/stain_bench.py [--seconds 3] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bcd.serving import ModelRuntime
from bcd.stain import StainNormalizer

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "bcd" / "bundled"
SHARED = ROOT.parent / "shared" / "data" / "IDC_regular_ps50_idx5"


def load_patches(count: int) -> tuple[np.ndarray, str]:
    """Up to ``count`` 50×50 patches, real where ../shared/data is present."""
    from PIL import Image

    if SHARED.is_dir():
        files = sorted(SHARED.glob("*/*/*.png"))[:: max(1, 35_924 // (2 * count))]
        images = [np.asarray(Image.open(path).convert("RGB")) for path in files]
        patches = [image for image in images if image.shape == (50, 50, 3)][:count]
        return np.stack(patches), f"{len(patches)} real patches"
    from bcd.testing import synthetic_patch

    rng = np.random.default_rng(0)
    return np.stack([synthetic_patch(i % 2, rng) for i in range(count)]), "synthetic patches"


def model_copy(folder: Path, stain: StainNormalizer | None) -> Path:
    """The bundled model's ``model.json`` + ``model.onnx``, with ``stain`` written in."""
    folder.mkdir(parents=True)
    shutil.copy(BUNDLED / "model.onnx", folder / "model.onnx")
    description = json.loads((BUNDLED / "model.json").read_text())
    if stain is not None:
        description["input"]["stain_normalization"] = stain.to_json()
    (folder / "model.json").write_text(json.dumps(description))
    return folder


def patches_per_second(
    runtime: ModelRuntime, patches: np.ndarray, batch: int, seconds: float
) -> float:
    """Score ``patches`` in requests of ``batch`` for about ``seconds``."""
    scored, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for start in range(0, len(patches), batch):
            runtime.predict(list(patches[start : start + batch]), tta=False, timeout=60)
            scored += min(batch, len(patches) - start)
    return scored / (time.perf_counter() - started)


def stain_per_second(
    stain: StainNormalizer, patches: np.ndarray, batch: int, seconds: float
) -> float:
    """The stain step alone, in batches of ``batch``."""
    scored, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for start in range(0, len(patches), batch):
            stain(patches[start : start + batch])
            scored += min(batch, len(patches) - start)
    return scored / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--patches", type=int, default=1024)
    args = parser.parse_args()
    patches, origin = load_patches(args.patches)
    stains = {method: StainNormalizer.fit(method, patches) for method in ("reinhard", "macenko")}
    with tempfile.TemporaryDirectory() as temporary:
        folders = {"none": model_copy(Path(temporary) / "none", None)}
        for method, stain in stains.items():
            folders[method] = model_copy(Path(temporary) / method, stain)
        runtimes = {
            name: ModelRuntime(
                folder, threads=args.threads, max_batch_size=args.batch, max_wait_ms=0.0
            )
            for name, folder in folders.items()
        }
        served: dict[str, list[float]] = {name: [] for name in runtimes}
        alone: dict[str, list[float]] = {name: [] for name in stains}
        try:
            for runtime in runtimes.values():
                runtime.warm()
            for _ in range(args.rounds):
                for name, runtime in runtimes.items():
                    served[name].append(
                        patches_per_second(runtime, patches, args.batch, args.seconds)
                    )
                for name, stain in stains.items():
                    alone[name].append(stain_per_second(stain, patches, args.batch, args.seconds))
        finally:
            for runtime in runtimes.values():
                runtime.close()
    passed = {
        name: float(np.mean((stain(patches) == patches).all(axis=(1, 2, 3))))
        for name, stain in stains.items()
    }
    print(f"{origin}; bundled model; batch {args.batch}; {args.threads} threads")
    print(f"best of {args.rounds} rounds of {args.seconds:g} s each")
    baseline = max(served["none"])
    header = ("stain_normalization", "ModelRuntime patches/s", "ratio", "stain step alone")
    print(f"{header[0]:<20} {header[1]:>23} {header[2]:>7} {header[3]:>17} {'passed through':>15}")
    for name, values in served.items():
        step = f"{max(alone[name]):>17.0f}" if name in alone else f"{'-':>17}"
        share = f"{passed[name]:>15.1%}" if name in passed else f"{'-':>15}"
        print(f"{name:<20} {max(values):>23.0f} {max(values) / baseline:>7.2f} {step} {share}")


if __name__ == "__main__":
    main()
