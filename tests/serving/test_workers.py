"""``bcd serve --workers 2``: two processes on one port act as one server."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from bcd import registry
from bcd.config import Settings
from bcd.serving._workers import Supervisor, WorkersFailedError, forget_dead_workers
from tests.serving.conftest import _free_port, deploy_tiny, png_bytes

_PREDICT_HEADERS = {"Content-Type": "application/x-image", "Accept": "text/plain"}


@contextlib.contextmanager
def _serve_two_workers(settings: Settings, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``bcd serve --workers 2 OPTIONS`` process on endpoint ``ep``, both workers ready."""
    port = _free_port()
    env = {**os.environ, "BCD_HOME": str(settings.home), "BCD_DEFAULT_ENDPOINT": "ep"}
    bcd_bin = Path(sys.executable).with_name("bcd")
    process = subprocess.Popen(
        [str(bcd_bin), "serve", "--port", str(port), "--workers", "2", *options],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ready_in_a_row = 0
        while ready_in_a_row < 20:  # fresh connections: both workers must answer ready
            assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "bcd serve --workers 2 did not become ready"
            try:
                ok = httpx.get(f"{base}/readyz").status_code == 200
            except httpx.TransportError:
                ok = False
            ready_in_a_row = ready_in_a_row + 1 if ok else 0
            time.sleep(0.02 if ok else 0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


@pytest.fixture
def two_workers(settings: Settings, tiny_model: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``bcd serve --workers 2`` process with endpoint ``ep``, both workers ready."""
    deploy_tiny(settings, tiny_model)
    with _serve_two_workers(settings) as served:
        yield served


def _workers_holding_connections(server: subprocess.Popen, port: int) -> set[int]:
    """Pids of the server's worker processes with an open client connection on ``port``."""
    holders = set()
    for child in psutil.Process(server.pid).children(recursive=True):
        for connection in child.net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port and connection.raddr:
                holders.add(child.pid)
    return holders


def _metric_total(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{key}="{value}"' in match.group(1) for key, value in labels.items()):
            total += float(match.group(2))
    return total


def test_two_workers_share_metrics_registry_counts_and_slides(
    two_workers: tuple[str, subprocess.Popen], settings: Settings
) -> None:
    base, process = two_workers
    port = int(base.rsplit(":", 1)[1])
    dark = png_bytes(np.full((50, 50, 3), (110, 50, 140), np.uint8))
    clients = [httpx.Client(base_url=base) for _ in range(24)]
    sent = 0
    try:
        for client in clients:  # one connection each: the kernel spreads them over workers
            answer = client.post("/predict-breast-cancer", content=dark, headers=_PREDICT_HEADERS)
            assert answer.status_code == 200 and answer.text == "Cancer detected"
            sent += 1
        assert len(_workers_holding_connections(process, port)) == 2
        for client in clients:
            for _ in range(3):
                answer = client.post(
                    "/predict-breast-cancer", content=dark, headers=_PREDICT_HEADERS
                )
                assert answer.status_code == 200
                sent += 1
        # Any worker answers /metrics for the whole server.
        for client in clients[:4]:
            text = client.get("/metrics").text
            assert (
                _metric_total(
                    text, "bcd_http_requests_total", route="/predict-breast-cancer", status="200"
                )
                == sent
            )
            assert _metric_total(text, "bcd_invocations_total", endpoint="ep", outcome="ok") == sent

        slide = io.BytesIO()
        image = np.full((400, 400, 3), 235, np.uint8)
        image[100:300, 100:300] = (110, 50, 140)
        Image.fromarray(image).save(slide, format="PNG", dpi=(6350, 6350))
        posted = clients[0].post("/slides", files={"slide": ("case.png", slide.getvalue())})
        assert posted.status_code == 202, posted.text
        analysis_id = posted.json()["id"]
        deadline = time.monotonic() + 60
        while True:  # polls on every connection, so on both workers
            states = {c.get(f"/slides/{analysis_id}").json()["status"] for c in clients}
            if states == {"Completed"}:
                break
            assert states <= {"InProgress", "Completed"}, states
            assert time.monotonic() < deadline, "the slide analysis did not complete"
            time.sleep(0.2)
    finally:
        for client in clients:
            client.close()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    assert process.returncode == 0
    stats = registry.describe_endpoint("ep", settings=settings)
    variants = stats["ProductionVariants"]
    assert sum(variant["InvocationCount"] for variant in variants) == sent


class _Children:
    """``Supervisor.start``/``reap`` over real child processes that run ``code``."""

    def __init__(self, *codes: str) -> None:
        self.codes = list(codes)
        self.started: list[subprocess.Popen] = []

    def start(self) -> int:
        code = self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]
        self.started.append(subprocess.Popen([sys.executable, "-c", code]))
        return self.started[-1].pid

    def reap(self) -> tuple[int, int]:
        for child in self.started:
            if child.returncode is None and child.poll() is not None:
                code = child.returncode
                return child.pid, (-code if code < 0 else code << 8)
        return 0, 0

    def running(self) -> list[subprocess.Popen]:
        return [child for child in self.started if child.poll() is None]


_SLEEPER = "import time\ntime.sleep(60)"


def _in_background(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_supervisor_replaces_a_worker_that_dies_and_stops_all_on_request() -> None:
    children = _Children(_SLEEPER)
    supervisor = Supervisor(children.start, 2, reap=children.reap)

    def kill_one_then_stop() -> None:
        _wait_for(lambda: len(children.running()) == 2)
        children.started[0].kill()
        _wait_for(lambda: len(children.started) == 3 and len(children.running()) == 2)
        supervisor.request_stop()

    helper = _in_background(kill_one_then_stop)
    supervisor.run()
    helper.join()
    assert len(children.started) == 3
    assert children.running() == []
    # The two live workers were asked to stop (SIGTERM), not killed.
    assert [child.returncode for child in children.started[1:]] == [-signal.SIGTERM] * 2
    assert supervisor.failure is None


def test_supervisor_stops_when_a_worker_cannot_start() -> None:
    children = _Children(_SLEEPER, "raise SystemExit(3)")
    supervisor = Supervisor(children.start, 2, reap=children.reap)
    with pytest.raises(WorkersFailedError, match="could not start"):
        supervisor.run()
    assert len(children.started) == 2  # no replacement for a worker whose app cannot start
    assert children.running() == []


def test_supervisor_gives_up_on_workers_that_keep_crashing() -> None:
    children = _Children(_SLEEPER, "raise SystemExit(1)")
    supervisor = Supervisor(children.start, 2, reap=children.reap)
    with pytest.raises(WorkersFailedError, match="5 times"):
        supervisor.run()
    assert len(children.started) == 6  # the sleeper, then five crashes and four replacements
    assert children.running() == []


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(
    two_workers: tuple[str, subprocess.Popen],
) -> None:
    base, process = two_workers
    dark = png_bytes(np.full((50, 50, 3), (110, 50, 140), np.uint8))
    workers = psutil.Process(process.pid).children()
    assert len(workers) == 2
    workers[0].kill()
    _wait_for(
        lambda: (
            {child.pid for child in psutil.Process(process.pid).children()}
            - {workers[0].pid, workers[1].pid}
            != set()
        ),
        timeout=30,
    )
    _wait_for(lambda: len(psutil.Process(process.pid).children()) == 2)
    ready = 0
    deadline = time.monotonic() + 30
    while ready < 20:  # fresh connections reach both workers, the new one included
        assert time.monotonic() < deadline, "the replacement worker did not become ready"
        with httpx.Client(base_url=base) as client:
            answer = client.post("/predict-breast-cancer", content=dark, headers=_PREDICT_HEADERS)
        ready = ready + 1 if answer.status_code == 200 else 0
    assert answer.text == "Cancer detected"
    assert process.poll() is None


def test_forget_dead_workers_drops_only_gauges_of_stopped_processes(tmp_path: Path) -> None:
    stopped = subprocess.Popen([sys.executable, "-c", "pass"])
    stopped.wait()
    for pid in (os.getpid(), stopped.pid):
        (tmp_path / f"gauge_livemin_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")
    assert forget_dead_workers(tmp_path) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [
            f"gauge_livemin_{os.getpid()}.db",
            f"counter_{os.getpid()}.db",
            f"counter_{stopped.pid}.db",
        ]
    )


def test_every_worker_closes_connections_that_trickle_their_request_head(
    settings: Settings, tiny_model: Path
) -> None:
    from tests.serving.test_connections import PARTIAL_HEAD, _trickle_until_closed

    deploy_tiny(settings, tiny_model)
    with _serve_two_workers(settings, "--header-timeout", "1") as (base, process):
        port = int(base.rsplit(":", 1)[1])
        connections = []
        try:
            for _ in range(40):
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                connection.sendall(PARTIAL_HEAD)
                connections.append(connection)
            assert len(_workers_holding_connections(process, port)) == 2
            assert httpx.get(f"{base}/healthz").status_code == 200
            closed_after, still_open = _trickle_until_closed(connections, 6.0)
        finally:
            for connection in connections:
                connection.close()
    assert still_open == 0 and max(closed_after) < 1 + 2.5
