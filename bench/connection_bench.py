"""What the request-head deadline of `bcd serve` costs: server CPU per request, one run.

Starts a bare ASGI app under uvicorn twice in child processes, once with
uvicorn's own HTTP protocol (the baseline) and once with
``bcd.serving._connections.head_timeout_protocol`` (what ``bcd serve`` runs),
sends the same keep-alive ``GET`` requests from a few client threads over
loopback, and prints each server's CPU time per request (read with psutil)
and their ratio (target: <= 1.05, i.e. within noise of the baseline).

    .venv/bin/python bench/connection_bench.py [--requests 20000] [--connections 8]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time

import psutil

SERVER = """
import sys, uvicorn
from bcd.serving._connections import head_timeout_protocol

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

http = head_timeout_protocol(10.0) if sys.argv[2] == "guarded" else "auto"
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            lifespan="off", http=http, access_log=False)
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(port: int, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        for _ in range(count):
            connection.sendall(REQUEST)
            answer = b""
            while not answer.endswith(b"ok"):
                chunk = connection.recv(4096)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                answer += chunk


def measure(kind: str, requests: int, connections: int) -> tuple[float, float]:
    """Server CPU µs per request and requests/s for protocol ``kind``."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), kind])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        _client(port, 200)  # warm-up
        server = psutil.Process(process.pid)
        cpu_before = sum(server.cpu_times()[:2])
        started = time.perf_counter()
        per_connection = requests // connections
        threads = [
            threading.Thread(target=_client, args=(port, per_connection))
            for _ in range(connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu = sum(server.cpu_times()[:2]) - cpu_before
        sent = per_connection * connections
        return cpu / sent * 1e6, sent / elapsed
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    results = {}
    for kind in ("auto", "guarded") * 3:  # alternated: both see the same load
        cpu_us, rate = measure(kind, args.requests, args.connections)
        previous = results.get(kind, (float("inf"), 0.0))
        results[kind] = (min(previous[0], cpu_us), max(previous[1], rate))
    for kind, label in (("auto", "uvicorn protocol (baseline)"), ("guarded", "bcd serve protocol")):
        cpu_us, rate = results[kind]
        print(f"{label:30s} {cpu_us:7.1f} µs CPU/request  {rate:8.0f} requests/s")
    ratio = results["guarded"][0] / results["auto"][0]
    print(f"CPU per request, bcd / baseline: {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
