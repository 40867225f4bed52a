"""The endpoint router: weights, pinning, hot updates without lost requests, deletes."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from bcd.config import Settings
from bcd.errors import NotFoundError, NotReadyError, UnknownVariantError
from bcd.serving import EndpointRouter, InMemoryEndpointSource, create_app
from tests.serving.conftest import endpoint_spec, png_bytes

PATCH = np.full((50, 50, 3), 200, np.uint8)


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def router_factory(serving_settings: Settings):  # type: ignore[no-untyped-def]
    routers: list[EndpointRouter] = []

    def make(source: InMemoryEndpointSource, **kwargs: object) -> EndpointRouter:
        router = EndpointRouter(source, serving_settings, poll_interval_s=0.05, **kwargs)  # type: ignore[arg-type]
        router.start()
        assert router.wait_ready(10)
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.close()


def test_weighted_split_follows_the_weights(
    router_factory, never_idc_model: Path, always_idc_model: Path
) -> None:
    source = InMemoryEndpointSource(
        [endpoint_spec("ab", [("A", never_idc_model, 0.8), ("B", always_idc_model, 0.2)])]
    )
    router = router_factory(source, seed=11)
    counts: collections.Counter[str] = collections.Counter()
    with router.use("ab") as endpoint:
        for _ in range(10_000):
            counts[router.choose(endpoint, None).name] += 1
    assert abs(counts["A"] / 10_000 - 0.8) < 0.02
    assert abs(counts["B"] / 10_000 - 0.2) < 0.02


def test_target_variant_pins_and_unknown_variant_is_refused(
    router_factory, never_idc_model: Path, always_idc_model: Path
) -> None:
    source = InMemoryEndpointSource(
        [endpoint_spec("ab", [("A", never_idc_model, 0.99), ("B", always_idc_model, 0.01)])]
    )
    router = router_factory(source)
    with router.use("ab") as endpoint:
        assert {router.choose(endpoint, "B").name for _ in range(50)} == {"B"}
        probabilities = router.choose(endpoint, "B").runtime.predict([PATCH])
        assert probabilities[0, 1] > 0.99
        with pytest.raises(UnknownVariantError, match="its variants are: A, B"):
            router.choose(endpoint, "C")


@pytest.mark.parametrize("order", ["default-first", "default-last"])
def test_a_zero_weight_variant_answers_only_when_pinned(
    router_factory, never_idc_model: Path, always_idc_model: Path, order: str
) -> None:
    variants = [("accurate", never_idc_model, 1.0), ("fast", always_idc_model, 0.0)]
    if order == "default-last":
        variants.reverse()
    router = router_factory(InMemoryEndpointSource([endpoint_spec("two", variants)]), seed=3)
    with router.use("two") as endpoint:
        assert {router.choose(endpoint, None).name for _ in range(2_000)} == {"accurate"}
        assert router.choose(endpoint, "fast").name == "fast"


def test_a_zero_weight_variant_takes_no_share_of_the_cores(
    router_factory, never_idc_model: Path, always_idc_model: Path
) -> None:
    two = [("accurate", never_idc_model, 1.0), ("fast", always_idc_model, 0.0)]
    split = [("A", never_idc_model, 0.5), ("B", always_idc_model, 0.5)]
    source = InMemoryEndpointSource([endpoint_spec("two", two), endpoint_spec("split", split)])
    router = router_factory(source, cores=2)
    with router.use("two") as endpoint:
        assert {v.runtime.threads for v in endpoint.variants.values()} == {2}
    with router.use("split") as endpoint:
        assert {v.runtime.threads for v in endpoint.variants.values()} == {1}


def test_slides_use_the_fast_variant_when_there_is_one(
    router_factory, never_idc_model: Path, always_idc_model: Path
) -> None:
    source = InMemoryEndpointSource(
        [
            endpoint_spec(
                "two", [("accurate", never_idc_model, 1.0), ("fast", always_idc_model, 0.0)]
            ),
            endpoint_spec("plain", [("A", never_idc_model, 1.0)]),
        ]
    )
    router = router_factory(source)
    with router.use("two") as endpoint:
        assert {router.choose_for_slides(endpoint).name for _ in range(50)} == {"fast"}
    with router.use("plain") as endpoint:
        assert router.choose_for_slides(endpoint).name == "A"


def test_unknown_creating_and_failed_endpoints(
    router_factory, tiny_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    creating = endpoint_spec("new", [("A", tiny_model, 1.0)])
    creating = type(creating)(**{**creating.__dict__, "status": "Creating"})
    source = InMemoryEndpointSource(
        [
            endpoint_spec("ok", [("A", tiny_model, 1.0)]),
            endpoint_spec("bad", [("A", broken, 1.0)]),
            creating,
        ]
    )
    router = router_factory(source)
    assert router.ready
    with pytest.raises(NotFoundError, match="does not exist"), router.use("nope"):
        pass
    with pytest.raises(NotReadyError, match="Creating"), router.use("new"):
        pass
    with pytest.raises(NotReadyError, match=r"failed to load: no model\.json"), router.use("bad"):
        pass
    described = {item["EndpointName"]: item for item in router.describe()}
    assert described["ok"]["Serving"] and not described["bad"]["Serving"]
    assert "model.json" in described["bad"]["FailureReason"]


def test_failed_update_keeps_the_old_version_serving(
    router_factory, tiny_model: Path, tmp_path: Path
) -> None:
    source = InMemoryEndpointSource([endpoint_spec("ep", [("A", tiny_model, 1.0)])])
    router = router_factory(source)
    source.put(endpoint_spec("ep", [("A", tmp_path / "missing", 1.0)], version=2))
    wait_for(lambda: router.describe("ep")[0]["FailureReason"] is not None)
    with router.use("ep") as endpoint:
        assert endpoint.spec.version == 1


def test_delete_retires_the_endpoint(router_factory, tiny_model: Path) -> None:
    source = InMemoryEndpointSource([endpoint_spec("ep", [("A", tiny_model, 1.0)])])
    router = router_factory(source)
    with router.use("ep") as endpoint:
        runtime = endpoint.variants["A"].runtime
    source.delete("ep")
    wait_for(lambda: not router.has("ep"))
    with pytest.raises(NotFoundError), router.use("ep"):
        pass
    wait_for(lambda: runtime._batcher._closed)
    assert not router.ready


def test_only_serves_the_named_endpoints(router_factory, tiny_model: Path) -> None:
    source = InMemoryEndpointSource(
        [
            endpoint_spec("one", [("A", tiny_model, 1.0)]),
            endpoint_spec("two", [("A", tiny_model, 1.0)]),
        ]
    )
    router = router_factory(source, only={"two"})
    assert router.has("two") and not router.has("one")
    with pytest.raises(NotFoundError, match="does not serve"), router.use("one"):
        pass


def test_update_under_load_loses_no_request(
    serving_settings: Settings, never_idc_model: Path, always_idc_model: Path, live_server
) -> None:
    source = InMemoryEndpointSource([endpoint_spec("ep", [("A", never_idc_model, 1.0)])])
    app = create_app(serving_settings, source=source, poll_interval_s=0.05)
    url = live_server(app)
    assert app.state.router.wait_ready(10)
    body = png_bytes(PATCH)
    outcomes: list[tuple[int, int | None, int]] = []  # (status, predicted_class, sequence)
    lock = threading.Lock()
    stop = threading.Event()
    sequence = iter(range(10**9))

    def hammer() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                number = next(sequence)
                response = http.post(
                    "/endpoints/ep/invocations",
                    content=body,
                    headers={"Content-Type": "application/x-image"},
                )
                answer = (
                    response.json().get("predicted_class") if response.status_code == 200 else None
                )
                with lock:
                    outcomes.append((response.status_code, answer, number))

    workers = [threading.Thread(target=hammer) for _ in range(8)]
    for worker in workers:
        worker.start()
    wait_for(lambda: len(outcomes) > 100)
    source.put(endpoint_spec("ep", [("B", always_idc_model, 1.0)], version=2))
    wait_for(lambda: any(answer == 1 for _, answer, _ in list(outcomes)))
    settled = len(outcomes)
    wait_for(lambda: len(outcomes) > settled + 100)
    stop.set()
    for worker in workers:
        worker.join()

    statuses = collections.Counter(status for status, _, _ in outcomes)
    assert statuses == {200: len(outcomes)}, statuses
    answers = collections.Counter(answer for _, answer, _ in outcomes)
    assert answers[0] > 50 and answers[1] > 50
    # Once the new version answered, the old one never answers again.
    first_new = min(number for _, answer, number in outcomes if answer == 1)
    late_old = [n for _, answer, n in outcomes if answer == 0 and n > first_new + 16]
    assert not late_old
