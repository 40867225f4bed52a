"""Preprocessing, the ONNX runtime, test-time augmentation and micro-batching."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bcd.errors import InvalidInputError, NotFoundError, NotReadyError
from bcd.serving import MicroBatcher, ModelRuntime, Preprocessor, load_model_spec
from bcd.serving._preprocess import average_views, dihedral_views
from bcd.serving._runtime import softmax
from bcd.testing.models import TINY_MEAN, TINY_STD, write_tiny_model

rng = np.random.default_rng(3)


def test_normalisation_matches_model_json(tiny_model: Path) -> None:
    spec = load_model_spec(tiny_model)
    patches = [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(3)]
    batch = Preprocessor(spec)(patches)
    assert batch.shape == (3, 3, 50, 50) and batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    expected = (np.stack(patches) / 255.0 - np.array(TINY_MEAN)) / np.array(TINY_STD)
    np.testing.assert_allclose(batch, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_small_patches_are_padded_bottom_right_large_ones_centre_cropped(tiny_model: Path) -> None:
    preprocess = Preprocessor(load_model_spec(tiny_model))
    small = np.zeros((30, 40, 3), np.uint8)
    fitted = preprocess.fit(small)
    assert fitted.shape == (50, 50, 3)
    assert (
        (fitted[:30, :40] == 0).all()
        and (fitted[30:] == 255).all()
        and (fitted[:, 40:] == 255).all()
    )
    large = np.zeros((60, 70, 3), np.uint8)
    large[5:55, 10:60] = 7
    assert (preprocess.fit(large) == 7).all()


def test_dihedral_views_are_the_eight_symmetries() -> None:
    batch = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    views = dihedral_views(batch)
    assert views.shape == (16, 3, 5, 5)
    distinct = {views[i * 2].tobytes() for i in range(8)}
    assert len(distinct) == 8
    np.testing.assert_array_equal(views[:2], batch)
    assert dihedral_views(rng.standard_normal((1, 3, 4, 6)).astype(np.float32)).shape[0] == 4
    probabilities = np.arange(16 * 2, dtype=np.float64).reshape(16, 2)
    np.testing.assert_allclose(
        average_views(probabilities, 8), probabilities.reshape(8, 2, 2).mean(0)
    )


def test_predictions_match_a_bare_session_and_temperature(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = write_tiny_model(tmp_path / "m", temperature=2.0)
    patches = [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(5)]
    runtime = ModelRuntime(model, threads=1)
    try:
        probabilities = runtime.predict(patches)
    finally:
        runtime.close()
    session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = Preprocessor(load_model_spec(model))(patches)
    (logits,) = session.run(None, {"images": batch})
    np.testing.assert_allclose(probabilities, softmax(logits, 2.0), rtol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert not np.allclose(probabilities, softmax(logits, 1.0))


def test_tta_matches_the_mean_over_views(tiny_model: Path) -> None:
    runtime = ModelRuntime(tiny_model, threads=1)
    try:
        patch = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
        plain = runtime.predict([patch], tta=False)
        views = [np.rot90(patch, k) for k in range(4)] + [
            np.rot90(patch[:, ::-1], k) for k in range(4)
        ]
        manual = runtime.predict([np.ascontiguousarray(v) for v in views]).mean(axis=0)
        augmented = runtime.predict([patch], tta=True)
    finally:
        runtime.close()
    np.testing.assert_allclose(augmented[0], manual, rtol=1e-5)
    # The mean-colour model is rotation invariant, so TTA must not change it.
    np.testing.assert_allclose(augmented, plain, rtol=1e-5)


def test_dark_patches_score_idc(tiny_model: Path) -> None:
    runtime = ModelRuntime(tiny_model, threads=1)
    try:
        purple = np.full((50, 50, 3), (120, 60, 140), np.uint8)
        white = np.full((50, 50, 3), 245, np.uint8)
        probabilities = runtime.predict([purple, white])
    finally:
        runtime.close()
    assert probabilities[0, 1] > 0.9 and probabilities[1, 1] < 0.1


def test_replicas_split_the_cores(tiny_model: Path) -> None:
    runtime = ModelRuntime(tiny_model, replicas=2)
    try:
        assert len(runtime._sessions) == 2
        assert runtime.threads >= 1
        assert runtime.threads * 2 <= max(2, __import__("os").cpu_count() or 1)
    finally:
        runtime.close()


def test_concurrent_single_requests_share_inference_calls(tiny_model: Path) -> None:
    sizes: list[int] = []
    runtime = ModelRuntime(
        tiny_model, threads=1, max_wait_ms=20, on_batch=lambda n, s: sizes.append(n)
    )
    patches = [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(32)]
    expected = runtime.predict(patches)
    sizes.clear()
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(32)

    def one(index: int) -> None:
        start.wait()
        results[index] = runtime.predict([patches[index]])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runtime.close()
    assert sum(sizes) == 32
    assert max(sizes) > 1, f"no batching happened: {sizes}"
    assert len(sizes) < 32
    for index in range(32):  # each request got its own answer back
        np.testing.assert_allclose(results[index][0], expected[index], rtol=1e-5)


def test_large_requests_are_split_into_max_batch_chunks() -> None:
    sizes: list[int] = []

    def infer(_replica: int, batch: np.ndarray) -> np.ndarray:
        return np.stack([batch[:, 0, 0, 0], -batch[:, 0, 0, 0]], axis=1)

    batcher = MicroBatcher(
        infer, max_batch_size=8, max_wait_s=0, on_batch=lambda n, s: sizes.append(n)
    )
    batch = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
    futures = batcher.submit(batch)
    result = np.concatenate([future.result(5) for future in futures])
    batcher.close()
    assert sorted(sizes) == [4, 8, 8]
    np.testing.assert_array_equal(result[:, 0], np.arange(20))


def test_inference_errors_reach_the_caller_and_closed_batchers_refuse() -> None:
    def infer(_replica: int, _batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    batcher = MicroBatcher(infer, max_wait_s=0)
    (future,) = batcher.submit(np.zeros((1, 1, 1, 1), np.float32))
    with pytest.raises(RuntimeError, match="boom"):
        future.result(5)
    batcher.close()
    with pytest.raises(NotReadyError):
        batcher.submit(np.zeros((1, 1, 1, 1), np.float32))


def test_bad_model_folders_fail_at_load(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"model\.json"):
        ModelRuntime(tmp_path)
    model = write_tiny_model(tmp_path / "m")
    (model / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(InvalidInputError, match="ONNX Runtime"):
        ModelRuntime(model)
    write_tiny_model(tmp_path / "n", extra={"onnx": {"file": "model.onnx", "input_name": "x"}})
    with pytest.raises(InvalidInputError, match=r"model\.json names 'x'"):
        ModelRuntime(tmp_path / "n")
    write_tiny_model(
        tmp_path / "o",
        size=40,
        extra={"input": {"shape": [3, 50, 50], "mean": [0.5] * 3, "std": [0.2] * 3}},
    )
    with pytest.raises(InvalidInputError, match="takes"):
        ModelRuntime(tmp_path / "o")


def test_cancelled_requests_do_not_stop_the_worker() -> None:
    release = threading.Event()

    def infer(_replica: int, batch: np.ndarray) -> np.ndarray:
        release.wait(5)
        return np.zeros((len(batch), 2))

    batcher = MicroBatcher(infer, max_batch_size=1, max_wait_s=0)
    (first,) = batcher.submit(np.zeros((1, 1, 1, 1), np.float32))
    (second,) = batcher.submit(np.zeros((1, 1, 1, 1), np.float32))
    assert second.cancel()  # its caller gave up while it was queued
    release.set()
    assert first.result(5).shape == (1, 2)
    (third,) = batcher.submit(np.zeros((1, 1, 1, 1), np.float32))
    assert third.result(5).shape == (1, 2)
    batcher.close()


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_images_decoded_by_the_worker_score_like_decoded_ones(tiny_model: Path, tta: bool) -> None:
    import asyncio

    runtime = ModelRuntime(tiny_model, threads=1)
    image = rng.integers(0, 256, size=(48, 52, 3), dtype=np.uint8)

    def broken() -> np.ndarray:
        raise InvalidInputError("the image could not be decoded")

    async def score() -> tuple[np.ndarray, BaseException | None]:
        good, bad = await asyncio.gather(
            runtime.predict_one_async(lambda: image, tta),
            runtime.predict_one_async(broken, tta),
            return_exceptions=True,
        )
        assert isinstance(good, np.ndarray)
        return good, bad if isinstance(bad, BaseException) else None

    try:
        deferred, error = asyncio.run(score())
        np.testing.assert_allclose(deferred, runtime.predict([image], tta), rtol=1e-6)
    finally:
        runtime.close()
    assert deferred.shape == (1, 2)
    assert isinstance(error, InvalidInputError)


def test_views_of_pixels_normalise_to_the_views_of_the_normalised_batch(tiny_model: Path) -> None:
    preprocess = Preprocessor(load_model_spec(tiny_model))
    pixels = rng.integers(0, 256, size=(3, 50, 50, 3), dtype=np.uint8)  # (N, H, W, 3)
    np.testing.assert_array_equal(
        preprocess.normalise(dihedral_views(pixels, axes=(1, 2))),
        dihedral_views(preprocess.normalise(pixels)),
    )


def test_async_submissions_share_batches_and_settle_once_per_batch() -> None:
    def infer(_replica: int, batch: np.ndarray) -> np.ndarray:
        return np.stack([batch[:, 0, 0, 0], -batch[:, 0, 0, 0]], axis=1)

    release = threading.Event()
    gate_batches: list[int] = []

    def gated(replica: int, batch: np.ndarray) -> np.ndarray:
        gate_batches.append(len(batch))
        release.wait(5)
        return infer(replica, batch)

    batcher = MicroBatcher(gated, max_batch_size=64, max_wait_s=0)

    async def scenario() -> tuple[list[np.ndarray], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        blocker = batcher.submit_async(np.full((1, 1, 1, 1), -1, np.float32))
        while not gate_batches:  # the worker is busy with the blocker
            await asyncio.sleep(0.001)

        def item(value: float) -> Callable[[], np.ndarray]:
            def prepare() -> np.ndarray:
                if value == 3:
                    raise ValueError("undecodable")
                return np.full((1, 1, 1, 1), value, np.float32)

            return prepare

        waiters = [batcher.submit_deferred_async(item(value), 1) for value in range(6)]
        waiters += batcher.submit_async(np.full((2, 1, 1, 1), 9, np.float32))
        release.set()
        await blocker[0]
        results = await asyncio.gather(*waiters, return_exceptions=True)
        return results, wakeups

    results, wakeups = asyncio.run(scenario())
    batcher.close()
    # Everything queued meanwhile went in one batch (less the item that failed to decode).
    assert gate_batches == [1, 7]
    assert wakeups == 2  # one per batch, not one per request
    assert isinstance(results[3], ValueError)  # a failed item fails alone
    for value in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(results[value], [[value, -value]])
    np.testing.assert_array_equal(results[6], [[9, -9], [9, -9]])


def test_async_waits_time_out_and_late_results_are_dropped() -> None:
    release = threading.Event()
    scored: list[int] = []

    def infer(_replica: int, batch: np.ndarray) -> np.ndarray:
        release.wait(5)
        scored.append(len(batch))
        return np.zeros((len(batch), 2))

    batcher = MicroBatcher(infer, max_batch_size=1, max_wait_s=0)

    async def scenario() -> None:
        (slow,) = batcher.submit_async(np.zeros((1, 1, 1, 1), np.float32), timeout_s=0.05)
        queued = batcher.submit_deferred_async(
            lambda: np.zeros((1, 1, 1, 1), np.float32), 1, timeout_s=0.05
        )
        with pytest.raises(TimeoutError):
            await slow
        with pytest.raises(TimeoutError):
            await queued
        release.set()
        (later,) = batcher.submit_async(np.zeros((1, 1, 1, 1), np.float32), timeout_s=5)
        assert (await later).shape == (1, 2)

    asyncio.run(scenario())
    batcher.close()
    # The timed-out item still queued was skipped; the one being scored finished.
    assert scored == [1, 1]
