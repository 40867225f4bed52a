"""Data-layer throughput: import, and epoch reads of packed shards vs decoding PNGs.

Prints, from one run on the same files:

- import throughput (patches/s, wall and CPU seconds) of ``bcd data import``;
- one epoch over the packed split in shuffled order (numpy blocks, and the torch
  ``PackedStream``) vs one epoch decoding every PNG ("File mode"), and the ratio.

Usage::

    .venv/bin/python bench/data_bench.py [--source ../shared/data/IDC_regular_ps50_idx5]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "IDC_regular_ps50_idx5"


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="IDC tree or zip")
    parser.add_argument("--workers", type=int, default=None, help="decode processes")
    parser.add_argument("--decode-limit", type=int, default=0, help="PNGs to decode (0: all)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bcd-bench-") as home:
        os.environ["BCD_HOME"] = home
        from bcd.config import Settings
        from bcd.data import SplitSpec, decode_patch, import_dataset, open_split

        settings = Settings(home=Path(home))
        from bcd.db import get_engine

        get_engine(settings)
        cpu, wall = _cpu_seconds(), time.perf_counter()
        report = import_dataset(
            args.source, "bench", settings=settings, workers=args.workers,
            split=SplitSpec((0.7, 0.15, 0.15), 42),
        )  # fmt: skip
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
        print(
            f"import+pack+split: {report.imported} patches, {report.patients} patients, "
            f"{report.padded} padded, {len(report.rejected)} rejected"
        )
        print(f"  wall {wall:.1f} s = {report.imported / wall:.0f} patches/s; CPU {cpu:.1f} s")

        packed = open_split("bench", "all", settings)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(packed))
        start = time.perf_counter()
        checksum = 0
        for block in range(0, len(order), 256):
            chosen = np.sort(order[block : block + 256])
            images = packed.images[chosen]
            checksum += int(images[:, 0, 0, 0].sum())
        numpy_rate = len(order) / (time.perf_counter() - start)
        print(f"packed epoch, numpy blocks (shuffled): {numpy_rate:,.0f} patches/s")

        stream_rate = batch_rate = None
        try:
            import torch

            from bcd.data.stream import PackedStream

            torch.set_num_threads(1)
            stream = PackedStream(packed, seed=0)
            start = time.perf_counter()
            count = sum(1 for _ in stream)
            stream_rate = count / (time.perf_counter() - start)
            print(f"packed epoch, torch PackedStream (shuffled): {stream_rate:,.0f} patches/s")
            batched = PackedStream(packed, seed=0, batch_size=256)
            start = time.perf_counter()
            count = sum(len(labels) for _, labels in batched)
            batch_rate = count / (time.perf_counter() - start)
            print(
                f"packed epoch, PackedStream batch_size=256 (shuffled): {batch_rate:,.0f} patches/s"
            )
        except ImportError:
            print("torch not installed: PackedStream not measured")

        paths = packed.manifest().column("source_path").to_pylist()
        if args.decode_limit:
            paths = paths[: args.decode_limit]
        source = Path(args.source)
        start = time.perf_counter()
        for relative in paths:
            decode_patch((source / relative).read_bytes())
        png_rate = len(paths) / (time.perf_counter() - start)
        print(
            f"PNG epoch, read+decode each file (File mode): {png_rate:,.0f} patches/s "
            f"({len(paths)} files)"
        )
        print(f"ratio packed/PNG: numpy {numpy_rate / png_rate:.0f}x", end="")
        if stream_rate and batch_rate:
            print(
                f", PackedStream {stream_rate / png_rate:.0f}x, "
                f"batched PackedStream {batch_rate / png_rate:.0f}x"
            )
        else:
            print()


if __name__ == "__main__":
    main()
