"""Cost of an evaluation: patient-bootstrap time, and a model's scoring throughput.

Prints:

- bootstrap: seconds for ``--replicates`` patient-bootstrap replicates of every
  metric, on synthetic scores shaped like the IDC test split (5,400 patches,
  28 patients) and like the whole dataset (35,924 patches, 187 patients);
- throughput (with ``--model DIR``): patches per second that ``bcd evaluate``
  scores through the ONNX serving runtime, plain and with 8-view TTA, on
  ``--patches`` random 50x50 patches with ``--threads`` threads.

    .venv/bin/python bench/evaluation_bench.py [--replicates 1000] [--model DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bcd.evaluation import bootstrap_metrics


def bench_bootstrap(n_patches: int, n_patients: int, replicates: int) -> float:
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(n_patients), n_patches // n_patients + 1)[:n_patches]
    labels = rng.integers(0, 2, n_patches)
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.25), 0, 1)
    started = time.perf_counter()
    bootstrap_metrics(labels, scores, patients.astype(str), 0.5, n_replicates=replicates)
    return time.perf_counter() - started


def bench_throughput(model_dir: Path, n_patches: int, threads: int, tta: bool) -> float:
    from bcd.evaluation._inference import RuntimeScorer

    images = np.random.default_rng(0).integers(0, 256, (n_patches, 50, 50, 3), dtype=np.uint8)
    scorer = RuntimeScorer(model_dir, threads=threads)
    try:
        scorer.margins(images[:256], tta=False)  # warm-up
        started = time.perf_counter()
        scorer.margins(images, tta=tta)
        return n_patches / (time.perf_counter() - started)
    finally:
        scorer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--model", type=Path, help="a model folder to measure scoring speed")
    parser.add_argument("--patches", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    for n_patches, n_patients in ((5400, 28), (35924, 187)):
        seconds = bench_bootstrap(n_patches, n_patients, args.replicates)
        print(
            f"bootstrap: {args.replicates} replicates, {n_patches} patches, "
            f"{n_patients} patients: {seconds:.2f} s"
        )
    if args.model is not None:
        for tta in (False, True):
            rate = bench_throughput(args.model, args.patches, args.threads, tta)
            print(
                f"throughput: {rate:,.0f} patches/s ({args.threads} threads, "
                f"TTA {'on, 8 views' if tta else 'off'})"
            )


if __name__ == "__main__":
    main()
