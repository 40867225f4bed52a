"""Connection limits of ``bcd serve`` on real loopback sockets: slowloris heads are closed."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from bcd.config import Settings
from bcd.serving import InMemoryEndpointSource, create_app
from bcd.serving._workers import uvicorn_options
from tests.serving.conftest import _free_port, png_bytes

HEADER_TIMEOUT_S = 0.5
UPLOAD_TIMEOUT_S = 1.0
# Generous: the loop of a 2-core machine shared with other work may lag.
MARGIN_S = 2.5
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture
def server(serving_settings: Settings, source: InMemoryEndpointSource) -> Iterator[int]:
    """``bcd serve``'s uvicorn options on a loopback port, in this process; yields the port."""
    import uvicorn

    settings = serving_settings.model_copy(
        update={
            "header_timeout_s": HEADER_TIMEOUT_S,
            "slide_upload_timeout_s": UPLOAD_TIMEOUT_S,
            "port": _free_port(),
        }
    )
    app = create_app(settings, source=source, poll_interval_s=0.05)
    options = {**uvicorn_options(settings, access_log=False), "log_level": "warning"}
    instance = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert instance.started, "uvicorn did not start"
    assert app.state.router.wait_ready(10)
    yield settings.port
    instance.should_exit = True
    thread.join(timeout=10)


def _closed_by_server(connection: socket.socket) -> bool:
    """Whether the server closed ``connection`` (EOF or reset), without blocking."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(4096) == b""
    except OSError:
        return True


def _trickle_until_closed(
    connections: list[socket.socket], limit_s: float
) -> tuple[list[float], int]:
    """Send one more header line to each open connection every 0.1 s, for ``limit_s`` at most.

    Returns:
        Seconds from now until each connection was closed, and how many stayed open.
    """
    started = time.monotonic()
    closed_after: list[float] = []
    open_ = list(connections)
    while open_ and time.monotonic() - started < limit_s:
        still_open = []
        for connection in open_:
            if _closed_by_server(connection):
                closed_after.append(time.monotonic() - started)
                continue
            try:
                connection.sendall(b"X-Slow: 1\r\n")
                still_open.append(connection)
            except OSError:
                closed_after.append(time.monotonic() - started)
        open_ = still_open
        time.sleep(0.1)
    return closed_after, len(open_)


def _connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.setblocking(True)
    return connection


def _read_answer(connection: socket.socket) -> bytes:
    """One whole HTTP answer: the head, then as many body bytes as it declares."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(4096)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    declared = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    length = int(declared[0].split(b":")[1]) if declared else 0
    while len(body) < length:
        chunk = connection.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_slowloris_connections_are_closed_while_normal_requests_succeed(server: int) -> None:
    connections = []
    try:
        for _ in range(200):
            connection = _connect(server)
            connection.sendall(PARTIAL_HEAD)
            connections.append(connection)
        answers: list[int] = []
        normal = threading.Thread(
            target=lambda: answers.append(
                httpx.get(f"http://127.0.0.1:{server}/healthz", timeout=10).status_code
            )
        )
        normal.start()
        closed_after, still_open = _trickle_until_closed(
            connections, HEADER_TIMEOUT_S + MARGIN_S + 1
        )
        normal.join(10)
    finally:
        for connection in connections:
            connection.close()
    assert still_open == 0, f"{still_open} of 200 slowloris connections were never closed"
    assert max(closed_after) < HEADER_TIMEOUT_S + MARGIN_S
    assert answers == [200]


def test_a_slow_next_head_on_a_keep_alive_connection_is_closed(server: int) -> None:
    with _connect(server) as connection:
        connection.sendall(PARTIAL_HEAD + b"\r\n")
        assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        connection.sendall(PARTIAL_HEAD)  # the next request's head, trickled
        closed_after, still_open = _trickle_until_closed(
            [connection], 2 * HEADER_TIMEOUT_S + MARGIN_S + 1
        )
    assert still_open == 0
    assert closed_after[0] < 2 * HEADER_TIMEOUT_S + MARGIN_S


def test_a_head_in_pieces_within_the_timeout_is_answered(server: int) -> None:
    with _connect(server) as connection:
        for line in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            connection.sendall(line)
            time.sleep(HEADER_TIMEOUT_S / 5)
        assert connection.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_body_slower_than_the_header_timeout_is_still_answered(server: int) -> None:
    body = png_bytes(np.full((50, 50, 3), 230, dtype=np.uint8))
    head = (
        b"POST /predict-breast-cancer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: image/png\r\nAccept: text/plain\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with _connect(server) as connection:
        connection.sendall(head)
        time.sleep(2 * HEADER_TIMEOUT_S + 0.2)  # the head is complete; the body is not bound by it
        connection.sendall(body)
        answer = _read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"Cancer not detected")


def test_a_slide_upload_slower_than_its_timeout_gets_504_and_leaves_nothing(
    server: int, serving_settings: Settings
) -> None:
    head = (
        b"POST /slides?filename=slow.png HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    )
    started = time.monotonic()
    answer = b""
    with _connect(server) as connection:
        connection.sendall(head + b"\x89PNG\r\n\x1a\n")
        connection.settimeout(0.2)
        while b"}}" not in answer and time.monotonic() - started < UPLOAD_TIMEOUT_S + MARGIN_S:
            try:
                connection.sendall(b"\0" * 10)  # a trickle: the upload never completes
                answer += connection.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 504"), answer[:200]
    assert b'"code": "timeout"' in answer and b"BCD_SLIDE_UPLOAD_TIMEOUT_S" in answer
    assert time.monotonic() - started < UPLOAD_TIMEOUT_S + MARGIN_S
    uploads = serving_settings.home / "slides" / ".uploads"
    assert uploads.is_dir() and not list(uploads.glob("*"))
