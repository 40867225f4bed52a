"""Serving metrics: Prometheus series, and per-variant totals flushed to the registry.

Each :class:`ServingMetrics` owns its Prometheus registry, so several apps in
one process (tests) never share or clash over series. Under ``bcd serve
--workers N`` every worker process writes its series to the shared
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and
``/metrics`` sums them, so any worker answers for the whole server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from bcd.errors import NotFoundError

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# record(endpoint, variant, count, latency_ms_total, errors)
RecordFn = Callable[[str, str, int, float, int], None]


class ServingMetrics:
    """Counters and histograms of the serving runtime.

    Args:
        multiprocess: Render the series of every worker process that shares
            ``PROMETHEUS_MULTIPROC_DIR`` (set before ``prometheus_client`` is
            first imported in the process), not only this one's.
    """

    def __init__(self, multiprocess: bool = False) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = multiprocess
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "bcd_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.invocations = Counter(
            "bcd_invocations",
            "Endpoint invocations (requests), by endpoint, variant and outcome.",
            ["endpoint", "variant", "outcome"],
            registry=self.registry,
        )
        self.images = Counter(
            "bcd_images",
            "Images scored, by endpoint and variant.",
            ["endpoint", "variant"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bcd_invocation_latency_seconds",
            "Time from decoded request to probabilities, by endpoint and variant.",
            ["endpoint", "variant"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "bcd_batch_size",
            "Images per inference call (after micro-batching), by endpoint and variant.",
            ["endpoint", "variant"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "bcd_inference_seconds",
            "Time of one inference call, by endpoint and variant.",
            ["endpoint", "variant"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loaded_endpoints = Gauge(
            "bcd_loaded_endpoints",
            "Endpoints loaded and serving (several workers: the fewest any live one serves).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self._lock = threading.Lock()
        # (endpoint, variant) -> its series of successful invocations (count,
        # images, latency): labelled children looked up once, not per request.
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        # (endpoint, variant) -> [count, latency_ms_total, errors] since the last flush
        self._pending: dict[tuple[str, str], list[float]] = {}

    def batch_hook(self, endpoint: str, variant: str) -> Callable[[int, float], None]:
        """A ``(images, seconds)`` callback for one variant's micro-batcher."""
        sizes = self.batch_size.labels(endpoint, variant)
        durations = self.inference_seconds.labels(endpoint, variant)

        def observe(images: int, seconds: float) -> None:
            sizes.observe(images)
            durations.observe(seconds)

        return observe

    def record_invocation(
        self, endpoint: str, variant: str, images: int, seconds: float, failed: bool
    ) -> None:
        """Count one invocation of a variant (Prometheus now, registry at the next flush)."""
        if failed:
            self.invocations.labels(endpoint, variant, "error").inc()
        else:
            series = self._series.get((endpoint, variant))
            if series is None:
                series = (
                    self.invocations.labels(endpoint, variant, "ok"),
                    self.images.labels(endpoint, variant),
                    self.latency.labels(endpoint, variant),
                )
                with self._lock:
                    self._series[(endpoint, variant)] = series
            succeeded, scored, latency = series
            succeeded.inc()
            scored.inc(images)
            latency.observe(seconds)
        with self._lock:
            totals = self._pending.setdefault((endpoint, variant), [0, 0.0, 0])
            totals[0] += 1
            totals[1] += seconds * 1000.0
            totals[2] += int(failed)

    def flush(self, record: RecordFn) -> None:
        """Hand the totals gathered since the last flush to ``record``; keeps them on failure."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (endpoint, variant), (count, latency_ms, errors) in pending.items():
            try:
                record(endpoint, variant, int(count), float(latency_ms), int(errors))
            except NotFoundError:
                logger.debug("endpoint %s was deleted; its last counts are dropped", endpoint)
            except Exception:
                logger.warning(
                    "could not record invocations of %s/%s; will retry",
                    endpoint,
                    variant,
                    exc_info=True,
                )
                with self._lock:
                    totals = self._pending.setdefault((endpoint, variant), [0, 0.0, 0])
                    totals[0] += count
                    totals[1] += latency_ms
                    totals[2] += errors

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return generate_latest(combined), CONTENT_TYPE_LATEST
