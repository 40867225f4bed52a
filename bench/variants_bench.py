"""The bundled endpoint's two variants: their speed, and what serving both costs at start.

Prints, in one run on this machine:

1. patches/s of each bundled variant at batch 256 through ``ModelRuntime.predict``
   (what the server runs; threads = the cores) against a bare ONNX Runtime session
   of the same file (targets: ``fast`` >= 2,000 patches/s, ``accurate`` >= 200 on
   2 cores), calls alternating so both see the same load;
2. ``bcd serve --bundled`` (what ``make run`` starts) from start to its first
   answered prediction, and its resident memory (RSS) once both variants answered,
   against a baseline in the same run: the same command on a home whose default
   endpoint a user pointed at a config with the ``fast`` model alone (kept as it is,
   so only one model loads). Both homes are deployed before the timed start (a
   restart, as every ``make run`` after the first); the runs alternate.

    .venv/bin/python bench/variants_bench.py [--repeats 3] [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PATCH = (
    ROOT.parent / "shared" / "data" / "IDC_regular_ps50_idx5" / "10253" / "1"
    / "10253_idx5_x651_y701_class1.png"
)  # fmt: skip


def _rate(call: object, batch: int, seconds: float) -> float:
    assert callable(call)
    call()
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        call()
        done += batch
    return done / (time.perf_counter() - started)


def _speeds(folder: Path, tiles: np.ndarray, cores: int, seconds: float) -> tuple[float, float]:
    """Patches/s of one model folder: ``ModelRuntime.predict``, then a bare session."""
    import onnxruntime as ort

    from bcd.serving._runtime import ModelRuntime

    runtime = ModelRuntime(folder, threads=cores, max_batch_size=256, name="bench")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = cores, 1
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    normalised = runtime.preprocess.normalise(tiles)
    feed = {runtime.spec.input_name: normalised}
    batch = list(tiles)
    served, bare = [], []
    try:
        for _ in range(2):  # alternate so both see the same load
            served.append(_rate(lambda: runtime.predict(batch), len(batch), seconds / 2))
            bare.append(_rate(lambda: session.run(None, feed), len(batch), seconds / 2))
    finally:
        runtime.close()
    return statistics.mean(served), statistics.mean(bare)


def variant_speeds(seconds: float) -> None:
    """Patches/s of each bundled variant at batch 256, runtime against a bare session."""
    from bcd.registry._bundled import bundled_variants
    from bcd.serving._runtime import available_cores

    cores = available_cores()
    tiles = np.random.default_rng(0).integers(0, 256, (256, 50, 50, 3), dtype=np.uint8)
    targets = {"fast": 2000.0, "accurate": 200.0}
    for variant in bundled_variants():
        rate, baseline = _speeds(variant.folder, tiles, cores, seconds)
        target = targets.get(variant.variant_name, 0.0)
        print(
            f"{variant.variant_name:>9} ({variant.model_name}): {rate:8,.0f} patches/s at batch "
            f"256, bare session {baseline:8,.0f} (ratio {rate / baseline:.2f}; target >= "
            f"{target:,.0f}: {'met' if rate >= target else 'MISSED'})",
            flush=True,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deployed_home(home: Path, fast_only: bool) -> None:
    """A home where the bundled endpoint is deployed; ``fast_only``: a user then
    pointed the default endpoint at a config with the fast model alone."""
    from bcd import registry
    from bcd.config import Settings

    settings = Settings(home=home)
    registry.ensure_bundled_endpoint(settings)
    if fast_only:
        variant = {"VariantName": "fast", "ModelName": registry.BUNDLED_MODEL}
        registry.create_endpoint_config("fast-only", [variant], settings=settings)
        registry.update_endpoint(settings.default_endpoint, "fast-only", settings=settings)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _post(url: str, body: bytes, variant: str | None) -> int:
    headers = {"Content-Type": "image/png"}
    if variant:
        headers["X-Target-Variant"] = variant
    request = urllib.request.Request(
        f"{url}/predict-breast-cancer", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except (urllib.error.URLError, OSError):
        return 0


def serve_once(home: Path, variants: list[str | None]) -> tuple[float, float]:
    """Seconds from ``bcd serve --bundled`` to its first answer, and its RSS (MiB) after
    each of ``variants`` answered."""
    port = _free_port()
    env = {**os.environ, "BCD_HOME": str(home)}
    body = PATCH.read_bytes()
    started = time.perf_counter()
    command = [sys.executable, "-m", "bcd", "serve", "--bundled", "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while _post(url, body, None) != 200:
            if process.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"bcd serve did not answer (exit code {process.poll()})")
            time.sleep(0.02)
        first = time.perf_counter() - started
        for variant in variants:
            for _ in range(20):
                assert _post(url, body, variant) == 200, variant
        return first, _rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=20)


def startup(repeats: int) -> None:
    """Start-up and RSS of ``bcd serve --bundled`` with both variants against fast alone."""
    results: dict[str, list[tuple[float, float]]] = {"both": [], "fast only": []}
    with tempfile.TemporaryDirectory(prefix="bcd-variants-bench-") as scratch:
        for run in range(repeats):
            both_home = Path(scratch) / f"both-{run}"
            fast_home = Path(scratch) / f"fast-{run}"
            _deployed_home(both_home, fast_only=False)
            _deployed_home(fast_home, fast_only=True)
            results["fast only"].append(serve_once(fast_home, [None]))
            results["both"].append(serve_once(both_home, [None, "fast"]))
    for label, runs in results.items():
        starts = ", ".join(f"{first:.2f}" for first, _ in runs)
        rss = ", ".join(f"{memory:.0f}" for _, memory in runs)
        print(f"bcd serve --bundled, {label:>9}: first answer {starts} s; RSS {rss} MiB")
    extra = statistics.median(f for f, _ in results["both"]) - statistics.median(
        f for f, _ in results["fast only"]
    )
    memory = statistics.median(m for _, m in results["both"]) - statistics.median(
        m for _, m in results["fast only"]
    )
    print(f"both variants cost {extra:+.2f} s to the first answer and {memory:+.0f} MiB RSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="start-ups of each kind")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per variant")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    variant_speeds(args.seconds)
    startup(args.repeats)


if __name__ == "__main__":
    main()
