"""Denormal floats are flushed on the threads that run inference, and only there."""

from __future__ import annotations

import platform
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bcd.serving import ModelRuntime
from bcd.serving._runtime import flush_denormals

BUNDLED = Path(__file__).resolve().parents[2] / "bcd" / "bundled"
TINY = np.float32(1e-39)  # a denormal float32

needs_x86_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"),
    reason="FTZ/DAZ are set through the x86-64 MXCSR",
)


def _on_thread(work):  # type: ignore[no-untyped-def]
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(work()))
    thread.start()
    thread.join()
    return box[0]


@needs_x86_linux
def test_flush_denormals_affects_only_the_calling_thread() -> None:
    def flushed_product() -> tuple[bool, float]:
        return flush_denormals(), float(TINY * np.float32(2))

    assert _on_thread(flushed_product) == (True, 0.0)
    assert _on_thread(lambda: float(TINY * np.float32(2))) > 0  # a fresh thread is untouched


@needs_x86_linux
def test_runtime_worker_flushes_denormals_and_scores_the_same() -> None:
    seen: list[float] = []

    def on_batch(images: int, seconds: float) -> None:  # runs on the batcher's worker
        seen.append(float(TINY * np.float32(2)))

    here = float(TINY * np.float32(2))
    runtime = ModelRuntime(BUNDLED, max_batch_size=16, on_batch=on_batch)
    try:
        # The session's own flag does not leak onto the thread that made it.
        assert float(TINY * np.float32(2)) == here
        assert _on_thread(lambda: float(TINY * np.float32(2))) == here
        session = runtime._sessions[0]
        options = session.get_session_options()
        assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"
        tiles = np.random.default_rng(3).integers(0, 256, (16, 50, 50, 3), dtype=np.uint8)
        scored = runtime.predict(list(tiles))
        assert seen == [0.0]
        # Same probabilities as a call on a thread that keeps denormals.
        direct = _on_thread(lambda: runtime._infer(0, tiles))
        np.testing.assert_allclose(scored, direct, atol=1e-6)
    finally:
        runtime.close()
