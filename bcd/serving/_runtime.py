"""One loaded model: ONNX Runtime sessions (one per replica) behind a micro-batcher."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bcd.errors import ArtifactIntegrityError, InvalidInputError
from bcd.serving._batching import MicroBatcher
from bcd.serving._model_spec import ModelSpec, load_model_spec
from bcd.serving._preprocess import Preprocessor, average_views, dihedral_views

logger = logging.getLogger(__name__)

_thread_state = threading.local()
_FTZ_DAZ = 0x8040  # MXCSR bit 15 flush-to-zero, bit 6 denormals-are-zero


def flush_denormals() -> bool:
    """Treat denormal floats as zero on the calling thread (x86-64 MXCSR FTZ and DAZ).

    A CNN's activations can fall into the denormal range on real tissue, where
    each multiply costs tens of cycles: the bundled model scores slide tiles
    about 1.5x slower than random pixels without this. ONNX Runtime sets the
    flags on its own pool threads (``session.set_denormal_as_zero``), but the
    thread calling ``run`` does a share of the work too, so the batcher's
    workers call this. Values this small (< 1.2e-38) change no probability.
    Done once per thread; other threads keep their floats as they are.

    Returns:
        Whether the flags are set on this thread (``False`` off Linux x86-64).
    """
    done = getattr(_thread_state, "flushed", None)
    if done is None:
        env = _float_env()
        if env is not None:
            env.mxcsr |= _FTZ_DAZ
        done = _thread_state.flushed = env is not None and _set_float_env(env)
    return bool(done)


@functools.cache
def _fenv_api() -> tuple[Any, Any] | None:
    """glibc's ``fegetenv``/``fesetenv`` and x86-64's ``fenv_t``, or ``None`` elsewhere."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return None
    import ctypes
    import ctypes.util

    class FloatEnv(ctypes.Structure):  # fenv_t on x86-64: the x87 environment, then MXCSR
        _fields_ = [("x87", ctypes.c_uint16 * 14), ("mxcsr", ctypes.c_uint32)]

    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        return (libm, FloatEnv) if hasattr(libm, "fegetenv") else None
    except OSError as error:
        logger.debug("no floating-point environment control: %s", error)
        return None


def _float_env() -> Any:
    """This thread's floating-point environment, or ``None`` where it cannot be read."""
    import ctypes

    api = _fenv_api()
    if api is None:
        return None
    env = api[1]()
    return env if api[0].fegetenv(ctypes.byref(env)) == 0 else None


def _set_float_env(env: Any) -> bool:
    import ctypes

    api = _fenv_api()
    return api is not None and api[0].fesetenv(ctypes.byref(env)) == 0


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def softmax(logits: np.ndarray, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """``softmax(logits / temperature + [0, …, 0, bias])`` over the last axis, stable.

    ``bias`` is added to the last (IDC) logit: for two classes
    ``P(IDC) = sigmoid((z1 − z0) / T + b)``, Platt scaling.
    """
    scaled = logits.astype(np.float64) / temperature  # (N, K)
    if bias:
        scaled[..., -1] += bias
    scaled -= scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def verify_onnx_file(path: Path, expected_sha256: str) -> None:
    """Check a model's ONNX file against the SHA-256 recorded at registration.

    Raises:
        ArtifactIntegrityError: The digests differ (the message names the file
            and both digests).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected_sha256:
        raise ArtifactIntegrityError.mismatch(path, expected_sha256, actual)


def _session(spec: ModelSpec, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn idle cores that the HTTP loop and the other
    # replicas need; sleeping costs a few microseconds per call instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # see flush_denormals
    options.log_severity_level = 3
    # The first session of a process also sets the flags on the thread that
    # creates it (and so on every thread that thread starts later): undone here.
    saved = _float_env()
    try:
        session = ort.InferenceSession(
            str(spec.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise InvalidInputError(
            f"{spec.onnx_path} could not be loaded by ONNX Runtime: {error}"
        ) from error
    finally:
        if saved is not None:
            _set_float_env(saved)
    inputs = {item.name: item for item in session.get_inputs()}
    outputs = {item.name for item in session.get_outputs()}
    if spec.input_name not in inputs or spec.output_name not in outputs:
        raise InvalidInputError(
            f"{spec.onnx_path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
            f"model.json names {spec.input_name!r} → {spec.output_name!r}"
        )
    declared = inputs[spec.input_name].shape[1:]
    expected = [spec.channels, spec.height, spec.width]
    if any(isinstance(d, int) and d != e for d, e in zip(declared, expected, strict=False)):
        raise InvalidInputError(
            f"{spec.onnx_path} takes {declared} images but model.json says {expected}"
        )
    return session


class ModelRuntime:
    """A model folder loaded for serving.

    Args:
        model_dir: Local folder with ``model.json`` and the ONNX file.
        replicas: Worker replicas (``InitialInstanceCount``), one session each.
        threads: Intra-op threads per session; default cores / replicas (at least 1),
            so replicas never oversubscribe the machine.
        max_batch_size: Most images per inference call.
        max_wait_ms: Longest a worker waits to fill a batch.
        on_batch: Called with (images, seconds) after every inference call.
        name: Names the worker threads.
        expected_sha256: The ONNX file's SHA-256 recorded when the model was
            registered; when given, the file is hashed once, before any session
            opens it, and must match.

    Raises:
        NotFoundError: ``model.json`` or the ONNX file is missing.
        InvalidInputError: They are invalid or disagree with each other.
        ArtifactIntegrityError: The ONNX file does not match ``expected_sha256``.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        replicas: int = 1,
        threads: int | None = None,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "model",
        expected_sha256: str | None = None,
    ) -> None:
        started = time.perf_counter()
        self.spec = load_model_spec(model_dir)
        if expected_sha256:
            verify_onnx_file(self.spec.onnx_path, expected_sha256)
        self.replicas = max(1, int(replicas))
        self.threads = threads or max(1, available_cores() // self.replicas)
        self.preprocess = Preprocessor(self.spec)
        self._sessions = [_session(self.spec, self.threads) for _ in range(self.replicas)]
        self._batcher = MicroBatcher(
            self._infer_on_worker,
            replicas=self.replicas,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_ms / 1000.0,
            on_batch=on_batch,
            name=name,
        )
        logger.info(
            "loaded %s (%d replicas × %d threads) in %.0f ms",
            self.spec.directory.name,
            self.replicas,
            self.threads,
            (time.perf_counter() - started) * 1000,
        )

    def _infer(self, replica: int, pixels: np.ndarray) -> np.ndarray:
        # Normalising here, once per micro-batch, costs less than once per
        # request, and keeps that work off the HTTP event loop.
        batch = self.preprocess.normalise(pixels)  # (N, H, W, 3) uint8 → (N, 3, H, W) float32
        (logits,) = self._sessions[replica].run(
            [self.spec.output_name], {self.spec.input_name: batch}
        )  # (N, 2)
        if logits.shape != (len(batch), 2):
            raise RuntimeError(f"the model returned logits of shape {logits.shape}")
        return softmax(logits, self.spec.temperature, self.spec.logit_bias)

    def _infer_on_worker(self, replica: int, pixels: np.ndarray) -> np.ndarray:
        flush_denormals()  # the batcher's own thread: nobody else's floats change
        return self._infer(replica, pixels)

    def warm(self) -> None:
        """Run each session once at batch 1 and at batch 8, so the first real
        request pays no allocation or graph-optimisation cost."""
        blank = np.full((1, self.spec.height, self.spec.width, 3), self.spec.pad_value, np.uint8)
        for replica in range(self.replicas):
            self._infer(replica, blank)
            self._infer(replica, np.repeat(blank, 8, axis=0))

    def submit(
        self, images: list[np.ndarray], tta: bool | None = None
    ) -> Callable[[float | None], np.ndarray]:
        """Preprocess and queue patches; returns ``wait(timeout_s)`` for the result.

        Prefer :meth:`predict` / :meth:`predict_async`; this is their shared half.
        """
        batch, views = self._prepare(images, tta)
        futures = self._batcher.submit(batch)

        def wait(timeout: float | None = None) -> np.ndarray:
            deadline = None if timeout is None else time.monotonic() + timeout
            parts = []
            for future in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                parts.append(future.result(remaining))
            return self._finish(parts, views)

        return wait

    def _prepare(self, images: list[np.ndarray], tta: bool | None) -> tuple[np.ndarray, int]:
        pixels = self.preprocess.stack(images)  # (N, H, W, 3) uint8, normalised per batch
        use_tta = self.spec.tta if tta is None else tta
        if not use_tta:
            return pixels, 1
        views = dihedral_views(pixels, axes=(1, 2))  # (V·N, H, W, 3)
        return views, len(views) // len(pixels)

    @staticmethod
    def _finish(parts: list[np.ndarray], views: int) -> np.ndarray:
        probabilities = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return average_views(probabilities, views) if views > 1 else probabilities

    def predict(
        self, images: list[np.ndarray], tta: bool | None = None, timeout: float | None = None
    ) -> np.ndarray:
        """Class probabilities ``(N, 2)`` of ``N`` RGB patches (blocking).

        Args:
            images: ``H×W×3`` uint8 patches; padded or cropped to the input size.
            tta: Average the 8 dihedral views; ``None`` follows model.json.
            timeout: Seconds to wait for the result (``None``: no limit).

        Raises:
            TimeoutError: The result did not come within ``timeout``.
        """
        return self.submit(images, tta)(timeout)

    async def predict_async(
        self, images: list[np.ndarray], tta: bool | None = None, timeout: float | None = None
    ) -> np.ndarray:
        """:meth:`predict` for asyncio: waits without blocking the event loop.

        Raises:
            TimeoutError: The result did not come within ``timeout`` seconds.
        """
        batch, views = self._prepare(images, tta)
        futures = self._batcher.submit_async(batch, timeout)
        parts = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        return self._finish(list(parts), views)

    async def predict_one_async(
        self,
        decode: Callable[[], np.ndarray],
        tta: bool | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """:meth:`predict_async` for one image that the scoring worker decodes.

        ``decode()`` (bytes → one ``H×W×3`` uint8 patch) runs on the replica's
        worker thread right before its micro-batch is scored, so the event
        loop never decodes and the replicas decode in parallel.

        Raises:
            Whatever ``decode()`` raises, for this request only.
            TimeoutError: The result did not come within ``timeout`` seconds.
        """
        views = self._view_count(tta)
        if views > self._batcher.max_batch_size:
            return await self.predict_async([decode()], tta, timeout)

        def prepare() -> np.ndarray:
            return self._prepare([decode()], tta)[0]

        probabilities = await self._batcher.submit_deferred_async(prepare, views, timeout)
        return probabilities if views == 1 else average_views(probabilities, views)

    def _view_count(self, tta: bool | None) -> int:
        """Images scored per input image: 8 (4 for non-square inputs) with TTA, else 1."""
        if not (self.spec.tta if tta is None else tta):
            return 1
        return 8 if self.spec.height == self.spec.width else 4

    def close(self) -> None:
        """Finish queued work, then release the sessions."""
        self._batcher.close()
        self._sessions.clear()
