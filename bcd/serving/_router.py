"""The endpoint router: which runtimes serve which endpoint, kept in step with the registry.

A poll thread reads the endpoint list every ``poll_interval_s``. A new or
changed endpoint (its ``version`` moves on every update) is loaded and warmed
*before* it takes traffic; then one assignment under the lock swaps it in, and
the old runtimes are closed only once their in-flight requests have finished.
An update under load therefore loses no request.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bcd.config import Settings
from bcd.errors import ArtifactIntegrityError, NotFoundError, NotReadyError, UnknownVariantError
from bcd.serving._metrics import ServingMetrics
from bcd.serving._runtime import ModelRuntime, available_cores
from bcd.serving._source import BaseEndpointSource, EndpointSpec

logger = logging.getLogger(__name__)

#: Whole-slide analysis scores on an endpoint's variant of this name when it has
#: one: the bundled endpoint's ``fast`` model, whose slide context was fitted for it.
SLIDE_VARIANT = "fast"


@dataclass
class LoadedVariant:
    """A production variant with its runtime."""

    name: str
    model_name: str
    weight: float
    runtime: ModelRuntime


class LoadedEndpoint:
    """One version of an endpoint, loaded: its variants and their traffic weights."""

    def __init__(self, spec: EndpointSpec, variants: list[LoadedVariant]) -> None:
        self.spec = spec
        self.variants = {variant.name: variant for variant in variants}
        self._order = variants
        weights = [max(0.0, variant.weight) for variant in variants]
        if sum(weights) <= 0:
            weights = [1.0] * len(variants)  # all weights zero: split evenly
        self._cumulative = list(itertools.accumulate(weights))
        self.in_flight = 0

    def choose(self, target: str | None, rng: random.Random) -> LoadedVariant:
        """The variant for one request: ``target`` if given, else drawn by weight.

        Raises:
            UnknownVariantError: ``target`` is not a variant of this endpoint.
        """
        if target:
            variant = self.variants.get(target)
            if variant is None:
                raise UnknownVariantError(
                    f"endpoint {self.spec.name!r} has no variant {target!r}; "
                    f"its variants are: {', '.join(self.variants)}"
                )
            return variant
        if len(self._order) == 1:
            return self._order[0]
        draw = rng.random() * self._cumulative[-1]
        index = bisect.bisect_right(self._cumulative, draw)
        return self._order[min(index, len(self._order) - 1)]

    def close(self) -> None:
        """Release every variant's runtime."""
        for variant in self._order:
            variant.runtime.close()


class EndpointRouter:
    """Loads the registry's endpoints and routes requests to their variants.

    Thread safety: every public method may be called from any thread.

    Args:
        source: Where endpoints come from (the registry).
        settings: Batching and thread settings for the runtimes.
        metrics: Where batch sizes go, and whose totals the poll thread flushes.
        only: Serve only these endpoint names (``None``: all).
        poll_interval_s: How often the poll thread re-reads the registry.
        flush_interval_s: How often invocation totals are written to the registry.
        seed: Seeds the weighted variant choice (tests).
        cores: CPU cores this router's runtimes share (default all this process
            may use; a worker of ``bcd serve --workers N`` gets its 1/N share).
    """

    def __init__(
        self,
        source: BaseEndpointSource,
        settings: Settings,
        *,
        metrics: ServingMetrics | None = None,
        only: set[str] | None = None,
        poll_interval_s: float = 1.0,
        flush_interval_s: float = 5.0,
        seed: int | None = None,
        cores: int | None = None,
    ) -> None:
        self.source = source
        self.cores = max(1, cores or available_cores())
        self.settings = settings
        self.metrics = metrics or ServingMetrics()
        self.only = set(only) if only else None
        self.poll_interval_s = poll_interval_s
        self.flush_interval_s = flush_interval_s
        self._rng = random.Random(seed)
        self._lock = threading.Condition()
        self._load_lock = threading.Lock()  # one load at a time (poll thread vs refresh)
        self._endpoints: dict[str, LoadedEndpoint] = {}
        self._known: dict[str, EndpointSpec] = {}
        self._failed: dict[str, tuple[int, str]] = {}
        self._resolved_at: dict[str, float] = {}
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drains: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the poll thread; its first pass loads every servable endpoint."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="bcd-router", daemon=True)
            self._thread.start()

    @property
    def polling(self) -> bool:
        """Whether a poll thread keeps this router in step with the registry."""
        return self._thread is not None

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first sync has finished; ``False`` on timeout."""
        return self._synced.wait(timeout)

    @property
    def ready(self) -> bool:
        """The first sync has finished and at least one endpoint is loaded."""
        with self._lock:
            return self._synced.is_set() and bool(self._endpoints)

    def close(self) -> None:
        """Stop polling, flush the totals, and release every runtime."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.metrics.flush(self.source.record_invocations)
        with self._lock:
            endpoints, self._endpoints = list(self._endpoints.values()), {}
        for endpoint in endpoints:
            self._drain(endpoint)
        for thread in self._drains:
            thread.join()

    def _poll(self) -> None:
        last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:
                logger.warning(
                    "could not read endpoints from the registry; retrying", exc_info=True
                )
            if time.monotonic() - last_flush >= self.flush_interval_s:
                self.metrics.flush(self.source.record_invocations)
                last_flush = time.monotonic()
            self._stop.wait(self.poll_interval_s)

    # -- keeping in step ---------------------------------------------------

    def _wanted(self, name: str) -> bool:
        return self.only is None or name in self.only

    def sync(self) -> None:
        """Read every endpoint once; load new or changed ones, retire deleted ones."""
        specs = {
            spec.name: spec for spec in self.source.list_endpoints() if self._wanted(spec.name)
        }
        with self._lock:
            self._known = dict(specs)
            gone = [name for name in self._endpoints if name not in specs]
        for spec in specs.values():
            self._apply(spec)
        for name in gone:
            self._retire(name)
        self._synced.set()

    def needs_refresh(self, name: str) -> bool:
        """Whether ``name`` was last resolved more than a poll interval ago."""
        return time.monotonic() - self._resolved_at.get(name, float("-inf")) >= self.poll_interval_s

    def refresh(self, name: str) -> None:
        """Resolve one endpoint now (a name the poll has not seen yet, or no poll thread)."""
        self._resolved_at[name] = time.monotonic()
        if not self._wanted(name):
            return
        try:
            spec = self.source.resolve_endpoint(name)
        except NotFoundError:
            with self._lock:
                self._known.pop(name, None)
            self._retire(name)
            return
        with self._lock:
            self._known[name] = spec
        self._apply(spec)

    def _apply(self, spec: EndpointSpec) -> None:
        with self._load_lock:
            if not spec.servable:
                self._retire(spec.name)
                return
            with self._lock:
                current = self._endpoints.get(spec.name)
                failed = self._failed.get(spec.name)
            if current is not None and current.spec == spec:
                return
            if failed is not None and failed[0] == spec.version:
                return  # this version failed already; wait for the next update
            try:
                loaded = self._load(spec)
            except Exception as error:
                reason = str(error)
                logger.error(
                    "endpoint %s version %d failed to load: %s", spec.name, spec.version, reason
                )
                with self._lock:
                    self._failed[spec.name] = (spec.version, reason)
                if isinstance(error, ArtifactIntegrityError):
                    self._record_failure(spec, reason)
                return
            with self._lock:
                old = self._endpoints.get(spec.name)
                self._endpoints[spec.name] = loaded
                self._failed.pop(spec.name, None)
                self.metrics.loaded_endpoints.set(len(self._endpoints))
            logger.info("endpoint %s now serves version %d", spec.name, spec.version)
            if old is not None:
                self._drain(old)

    def _record_failure(self, spec: EndpointSpec, reason: str) -> None:
        """Mark the endpoint ``Failed`` in the registry, so every server and
        ``describe_endpoint`` show why; the other endpoints keep serving."""
        try:
            self.source.fail_endpoint(spec.name, spec.version, reason)
        except Exception:
            logger.warning("could not mark endpoint %s Failed", spec.name, exc_info=True)

    def _load(self, spec: EndpointSpec) -> LoadedEndpoint:
        # The cores are shared by the replicas that take unpinned traffic; a variant
        # of weight 0 (reached only by X-Target-Variant) idles and gets as many threads.
        busy = [variant for variant in spec.variants if variant.weight > 0] or spec.variants
        replicas = sum(max(1, variant.instance_count) for variant in busy)
        threads = self.settings.inference_threads or max(1, self.cores // replicas)
        variants: list[LoadedVariant] = []
        try:
            for variant in spec.variants:
                try:
                    runtime = ModelRuntime(
                        variant.model_dir,
                        replicas=max(1, variant.instance_count),
                        threads=threads,
                        max_batch_size=self.settings.max_batch_size,
                        max_wait_ms=self.settings.max_batch_wait_ms,
                        on_batch=self.metrics.batch_hook(spec.name, variant.variant_name),
                        name=f"{spec.name}-{variant.variant_name}",
                        expected_sha256=variant.onnx_sha256 or None,
                    )
                except ArtifactIntegrityError as error:
                    raise ArtifactIntegrityError(
                        f"variant {variant.variant_name} (model {variant.model_name}): {error}"
                    ) from error
                variants.append(
                    LoadedVariant(variant.variant_name, variant.model_name, variant.weight, runtime)
                )
                runtime.warm()
        except BaseException:
            for loaded in variants:
                loaded.runtime.close()
            raise
        return LoadedEndpoint(spec, variants)

    def _retire(self, name: str) -> None:
        with self._lock:
            old = self._endpoints.pop(name, None)
            self._failed.pop(name, None)
            self.metrics.loaded_endpoints.set(len(self._endpoints))
        if old is not None:
            logger.info("endpoint %s is no longer served", name)
            self._drain(old)

    def _drain(self, old: LoadedEndpoint) -> None:
        # Close once the requests that hold the old version have finished;
        # bounded by the request timeout, after which those requests have failed anyway.
        def wait_and_close() -> None:
            deadline = time.monotonic() + self.settings.request_timeout_s + 5.0
            with self._lock:
                while old.in_flight and time.monotonic() < deadline:
                    self._lock.wait(timeout=0.5)
            old.close()

        thread = threading.Thread(target=wait_and_close, name="bcd-drain", daemon=True)
        self._drains = [t for t in self._drains if t.is_alive()]
        self._drains.append(thread)
        thread.start()

    # -- requests ----------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether ``name`` is loaded now."""
        with self._lock:
            return name in self._endpoints

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[LoadedEndpoint]:
        """Hold the current version of an endpoint for one request.

        Raises:
            NotFoundError: No such endpoint (or this server does not serve it).
            NotReadyError: It exists but is not loaded (creating, failed, still loading).
        """
        endpoint = self.acquire(name)
        try:
            yield endpoint
        finally:
            self.release(endpoint)

    def acquire(self, name: str) -> LoadedEndpoint:
        """:meth:`use` in two calls, for the hot path: hold the current version
        of ``name`` until :meth:`release`; raises as :meth:`use` does."""
        with self._lock:
            endpoint = self._endpoints.get(name)
            if endpoint is None:
                raise self._missing(name)
            endpoint.in_flight += 1
            return endpoint

    def release(self, endpoint: LoadedEndpoint) -> None:
        """End a hold taken by :meth:`acquire` (its version may then be closed)."""
        with self._lock:
            endpoint.in_flight -= 1
            if not endpoint.in_flight:
                self._lock.notify_all()

    def choose(self, endpoint: LoadedEndpoint, target: str | None) -> LoadedVariant:
        """Pick the variant for one request (see :meth:`LoadedEndpoint.choose`)."""
        return endpoint.choose(target, self._rng)

    def choose_for_slides(self, endpoint: LoadedEndpoint) -> LoadedVariant:
        """The variant that scores a whole slide: the endpoint's :data:`SLIDE_VARIANT`
        when it has one, else one drawn by weight (see :meth:`LoadedEndpoint.choose`)."""
        variant = endpoint.variants.get(SLIDE_VARIANT)
        return variant if variant is not None else endpoint.choose(None, self._rng)

    def _missing(self, name: str) -> Exception:
        if not self._wanted(name):
            return NotFoundError(f"this server does not serve endpoint {name!r}")
        if name in self._failed:
            version, reason = self._failed[name]
            return NotReadyError(
                f"endpoint {name!r} (version {version}) failed to load: {reason}. "
                "Fix the model and update the endpoint"
            )
        spec = self._known.get(name)
        if spec is not None and spec.failure_reason and spec.status == "Failed":
            return NotReadyError(f"endpoint {name!r} is Failed: {spec.failure_reason}")
        if spec is not None:
            return NotReadyError(
                f"endpoint {name!r} is {spec.status}, not serving yet; retry when it is InService"
            )
        if self.polling and not self._synced.is_set():
            return NotReadyError("the server is still loading its endpoints; retry in a moment")
        return NotFoundError(
            f"endpoint {name!r} does not exist; list endpoints with: bcd endpoints list"
        )

    # -- description -------------------------------------------------------

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """What this server knows of its endpoints, in SageMaker's names.

        Raises:
            NotFoundError: ``name`` is given and unknown.
        """
        with self._lock:
            names = sorted(set(self._known) | set(self._endpoints))
            if name is not None:
                if name not in names:
                    raise NotFoundError(f"endpoint {name!r} does not exist")
                names = [name]
            return [self._describe_one(each) for each in names]

    def _describe_one(self, name: str) -> dict[str, Any]:
        loaded = self._endpoints.get(name)
        spec = self._known.get(name) or (loaded.spec if loaded else None)
        assert spec is not None
        serving = loaded.spec if loaded else None
        failure = self._failed.get(name)
        return {
            "EndpointName": name,
            "EndpointStatus": spec.status,
            "EndpointConfigName": spec.config_name,
            "Version": spec.version,
            "Serving": serving is not None,
            "ServingVersion": serving.version if serving else None,
            "FailureReason": failure[1] if failure else spec.failure_reason,
            "ProductionVariants": [
                {
                    "VariantName": variant.variant_name,
                    "ModelName": variant.model_name,
                    "CurrentInstanceCount": variant.instance_count,
                    "CurrentWeight": variant.weight,
                    # The loaded model's P(IDC) cut-off (model.json); None until loaded.
                    "DecisionThreshold": self._threshold(loaded, variant.variant_name),
                }
                for variant in (serving or spec).variants
            ],
        }

    @staticmethod
    def _threshold(loaded: LoadedEndpoint | None, variant: str) -> float | None:
        runtime = loaded.variants.get(variant) if loaded else None
        return runtime.runtime.spec.decision_threshold if runtime else None
