"""Registry timings that matter to serving: start-up, resolution, stats, key checks.

Prints one line per measurement. Runs in a temporary BCD_HOME (SQLite) with a
placeholder 5 MB ONNX file per bundled variant (the registry hashes it but never opens the graph).

    .venv/bin/python bench/registry_bench.py
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MODEL_JSON = {
    "format_version": 1,
    "input": {
        "shape": [3, 50, 50],
        "scale": 255.0,
        "mean": [0.8, 0.62, 0.78],
        "std": [0.12, 0.16, 0.11],
    },
    "class_names": ["no IDC", "IDC"],
    "onnx": {"file": "model.onnx", "input_name": "images", "output_name": "logits"},
}


def _timed(label: str, call: Callable[[], object], repeat: int = 1) -> None:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    median = statistics.median(samples)
    print(f"{label:<48} {median:9.2f} ms (median of {repeat})")


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bcd-registry-bench-"))
    os.environ["BCD_HOME"] = str(home / "home")
    from bcd import registry
    from bcd.config import Settings
    from bcd.registry import _bundled, keys

    settings = Settings(home=home / "home")
    folder = home / "bundled"
    digests = []
    for variant_folder in (folder, folder / "accurate"):  # the fast and accurate variants
        variant_folder.mkdir(parents=True)
        (variant_folder / "model.json").write_text(json.dumps(MODEL_JSON))
        graph = os.urandom(5 * 1024 * 1024)
        (variant_folder / "model.onnx").write_bytes(graph)
        digests.append(hashlib.sha256(graph).hexdigest())
    _bundled.bundled_model_dir = lambda: folder  # type: ignore[assignment]
    _bundled.BUNDLED_ONNX_SHA256, _bundled.BUNDLED_ACCURATE_ONNX_SHA256 = digests

    _timed(
        "ensure_bundled_endpoint (fresh store)", lambda: registry.ensure_bundled_endpoint(settings)
    )
    _timed(
        "ensure_bundled_endpoint (already deployed)",
        lambda: registry.ensure_bundled_endpoint(settings),
        repeat=20,
    )
    for index in range(9):
        config = _bundled.bundled_config_name(settings.default_endpoint)
        registry.create_endpoint(f"extra-{index}", config, settings)
    _timed("resolve_endpoint", lambda: registry.resolve_endpoint("bcd-default", settings), 200)
    _timed("list_endpoints (10 endpoints)", lambda: registry.list_endpoints(settings), 50)
    _timed(
        "record_invocations",
        lambda: registry.record_invocations(
            "bcd-default", "accurate", 100, 250.0, settings=settings
        ),
        200,
    )
    raw = keys.create_api_key("bench", settings=settings).raw_key
    keys._cache.clear()
    _timed("verify_api_key (first, scrypt)", lambda: keys.verify_api_key(raw, settings))
    _timed("verify_api_key (cached)", lambda: keys.verify_api_key(raw, settings), 1000)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
