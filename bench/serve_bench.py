"""Serving speed: `bcd serve` against a naive baseline, one run, loopback only.

Prints, for the ``cnn`` model (the bundled one when it ships its torch weights,
else the bundled model's architecture and hyperparameters with random weights,
exported by the algorithms package):

1. time from starting ``bcd serve`` to its first answered prediction (target < 2 s);
2. requests/s and p50/p99 latency of single-patch ``POST /predict-breast-cancer``
   at concurrency 1, 16 and 64, for ``bcd serve`` and for bench/naive_server.py
   (FastAPI + torch eager, one forward per request), and their ratio
   (target >= 5x the baseline's requests/s at 64, with a lower p99), and each
   server's CPU time per answered request (read from /proc): on a machine
   shared with other work, requests/s also measure how much CPU the server was
   left, CPU per request measures the server alone;
3. patches/s of ``/endpoints/{name}/invocations`` with 256-image ``.npy``
   requests against a bare ONNX Runtime session in this process, calls
   alternating so both see the same load (target >= 0.8x).

Load comes from ``wrk`` (a Python client tops out near 250 requests/s here);
install it with ``apt-get install wrk`` (Debian/Ubuntu) or ``brew install wrk``.
Every run is bounded by ``--duration`` seconds.

    .venv/bin/python bench/serve_bench.py [--duration 8] [--json results.json] [--floor]

``--floor`` also measures what no Python server here can go below at the
highest concurrency: the CPU per request of wrk plus a bare uvicorn app that
hops each request through a worker thread, plus a bare ONNX Runtime session
at the batch size ``bcd serve`` formed (read from its /metrics), plus one
patch decode; and the requests/s that floor would allow on these cores.
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PATCH = (
    ROOT.parent / "shared" / "data" / "IDC_regular_ps50_idx5" / "10253" / "1"
    / "10253_idx5_x651_y701_class1.png"
)  # fmt: skip
ENDPOINT = "bench"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-image"
local file = io.open("{patch}", "rb")
wrk.body = file:read("*all")
file:close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cnn_model(folder: Path) -> Path:
    """A cnn model folder that both servers can run: the bundled model if it ships
    its torch weights, else the bundled model's architecture, hyperparameters and
    normalisation with random weights (same compute, which is what is measured)."""
    bundled = ROOT / "bcd" / "bundled"
    for candidate in [bundled, *bundled.glob("*")]:
        document = candidate / "model.json"
        if (
            document.is_file()
            and (candidate / "model.pt").is_file()
            and json.loads(document.read_text()).get("algorithm") == "cnn"
        ):
            return candidate
    import torch

    from bcd.algorithms import get_algorithm
    from bcd.algorithms.artifacts import write_artifacts
    from bcd.algorithms.models import build_model

    raw = {"image_shape": "3,50,50", "num_classes": "2", "epochs": "1"}
    mean, std = (0.8, 0.62, 0.78), (0.12, 0.16, 0.11)
    shipped = bundled / "model.json"
    if shipped.is_file() and json.loads(shipped.read_text()).get("algorithm") == "cnn":
        spec = json.loads(shipped.read_text())
        raw = {name: str(value) for name, value in spec["hyperparameters"].items()}
        mean, std = tuple(spec["input"]["mean"]), tuple(spec["input"]["std"])
    torch.manual_seed(0)
    hyperparameters = get_algorithm("cnn").validate_hyperparameters(raw)
    model = build_model("cnn", hyperparameters).eval()
    write_artifacts(
        folder,
        model,
        algorithm="cnn",
        hyperparameters=hyperparameters,
        mean=mean,
        std=std,
        parity_batch=torch.randn(8, 3, 50, 50),
        metrics={},
        dataset={"name": "random-weights"},
    )
    return folder


def deploy(model_dir: Path, home: Path) -> None:
    from bcd import registry
    from bcd.config import Settings

    settings = Settings(home=home)
    registry.create_model("bench-cnn", model_data=str(model_dir), settings=settings)
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "bench-cnn",
        "InitialInstanceCount": 1,
        "InitialVariantWeight": 1.0,
    }
    registry.create_endpoint_config("bench-config", [variant], settings=settings)
    registry.create_endpoint(ENDPOINT, "bench-config", settings=settings)


@contextmanager
def server(command: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def first_answer(url: str, body: bytes, process: subprocess.Popen, timeout: float = 60) -> float:
    """Poll until a prediction succeeds; returns when it did (monotonic)."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            connection.request(
                "POST", "/predict-breast-cancer", body, {"Content-Type": "application/x-image"}
            )
            if connection.getresponse().status == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("no answer in time")


def all_workers_ready(url: str, timeout: float = 60) -> float:
    """Poll ``/readyz`` on fresh connections until 20 in a row say ready (monotonic)."""
    import urllib.error
    import urllib.request

    deadline, in_a_row = time.monotonic() + timeout, 0
    while in_a_row < 20:
        if time.monotonic() > deadline:
            raise RuntimeError("not every worker became ready in time")
        try:
            ready = urllib.request.urlopen(f"{url}/readyz", timeout=5).status == 200
        except (OSError, urllib.error.HTTPError):
            ready = False
        in_a_row = in_a_row + 1 if ready else 0
    return time.monotonic()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its live children have used so far."""
    import psutil

    total = 0.0
    for process in (psutil.Process(pid), *psutil.Process(pid).children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def children_cpu_seconds() -> float:
    """CPU time (user + system) of this process's finished children (wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mean_batch_size(url: str) -> tuple[float, float]:
    """``(sum, count)`` of ``bcd_batch_size`` so far, from the server's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    totals = {"sum": 0.0, "count": 0.0}
    for kind in totals:
        for match in re.finditer(rf"^bcd_batch_size_{kind}{{[^}}]*}} ([\d.e+]+)$", text, re.M):
            totals[kind] += float(match.group(1))
    return totals["sum"], totals["count"]


def wrk(url: str, script: Path, connections: int, duration: int, pid: int) -> dict[str, float]:
    """One wrk run; also the server's CPU time per answered request.

    CPU per request is the steadier number on a shared machine: requests/s
    also depend on how much CPU the other processes leave to the server.
    """
    threads = 1 if connections == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    command += ["-s", str(script), f"{url}/predict-breast-cancer"]
    cpu_before, client_before = cpu_seconds(pid), children_cpu_seconds()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu_used = cpu_seconds(pid) - cpu_before
    client_used = children_cpu_seconds() - client_before

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    requests = re.search(r"Requests/sec:\s+([\d.]+)", output)
    answered = re.search(r"(\d+) requests in", output)
    failures = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "rps": float(requests.group(1)) if requests else float("nan"),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(failures.group(1)) if failures else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
        "server_cpu_ms_per_request": (
            cpu_used * 1000 / int(answered.group(1)) if answered else float("nan")
        ),
        "wrk_cpu_ms_per_request": (
            client_used * 1000 / int(answered.group(1)) if answered else float("nan")
        ),
    }


def batch_throughput(url: str, model_dir: Path, seconds: float) -> dict[str, float]:
    """Patches/s of 256-image .npy requests, and of a bare session at batch 256."""
    import http.client

    import onnxruntime as ort

    from bcd.serving import Preprocessor, load_model_spec

    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(256, 50, 50, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, patches)
    body = buffer.getvalue()
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    path = f"/endpoints/{ENDPOINT}/invocations"
    headers = {"Content-Type": "application/x-npy"}

    def served() -> None:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200

    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    # Spinning worker threads keep burning both cores for a while after each
    # bare call, i.e. during the served call that follows it; without spinning
    # the bare session itself is as fast (measured: 105 vs 107 ms per batch).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    batch = Preprocessor(load_model_spec(model_dir))(list(patches))

    def bare() -> None:
        session.run(None, {"images": batch})

    # Served and bare calls alternate, so both see the same machine load.
    served()
    bare()
    spent = {"served": 0.0, "bare": 0.0}
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 2 * seconds:
        for name, call in (("served", served), ("bare", bare)):
            begin = time.perf_counter()
            call()
            spent[name] += time.perf_counter() - begin
        count += 256
    served_rate = count / spent["served"]
    bare_rate = count / spent["bare"]
    return {
        "served_patches_per_s": served_rate,
        "bare_patches_per_s": bare_rate,
        "ratio": served_rate / bare_rate,
    }


HOP_ANSWER = json.dumps(
    {"probabilities": [0.1, 0.9], "predicted_class": 1, "cancer_detected": True,
     "message": "Cancer detected", "model": "m", "variant": "AllTraffic", "threshold": 0.5}
).encode()  # fmt: skip


def hop_server(port: int) -> None:
    """The floor of any Python server here: uvicorn (uvloop + httptools) and a
    bare ASGI app that reads the body, hands it to a worker thread and back
    (as micro-batching does), and answers a fixed JSON body."""
    import asyncio
    import queue
    import threading

    import uvicorn

    pending: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
        queue.SimpleQueue()
    )

    def worker() -> None:
        while True:
            loop, waiter = pending.get()
            loop.call_soon_threadsafe(waiter.set_result, None)

    threading.Thread(target=worker, daemon=True).start()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(HOP_ANSWER))]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        pending.put((loop, waiter))
        await waiter
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": HOP_ANSWER})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def floor(
    model_dir: Path, script: Path, connections: int, duration: int, batch: int
) -> dict[str, float]:
    """CPU per request that no server here can go below: wrk + the hop server, a
    bare ONNX Runtime session at ``batch`` images per call, one patch decode."""
    import onnxruntime as ort

    from bcd.serving import Preprocessor, load_model_spec
    from bcd.serving._decode import decode_image

    port = free_port()
    command = [sys.executable, __file__, "--hop-server", str(port)]
    with server(command, dict(os.environ)) as process:
        first_answer(f"http://127.0.0.1:{port}", b"", process)
        http = wrk(f"http://127.0.0.1:{port}", script, connections, duration, process.pid)
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    patch = PATCH.read_bytes()
    pixels = Preprocessor(load_model_spec(model_dir))([decode_image(patch, 10**8)] * batch)
    session.run(None, {"images": pixels})
    calls = max(20, 2000 // batch)
    started = time.process_time()
    for _ in range(calls):
        session.run(None, {"images": pixels})
    model_ms = (time.process_time() - started) * 1000 / (calls * batch)
    started = time.process_time()
    for _ in range(2000):
        decode_image(patch, 10**8)
    decode_ms = (time.process_time() - started) * 1000 / 2000
    total = (
        http["server_cpu_ms_per_request"] + http["wrk_cpu_ms_per_request"] + model_ms + decode_ms
    )
    return {
        "hop_server_cpu_ms": http["server_cpu_ms_per_request"],
        "wrk_cpu_ms": http["wrk_cpu_ms_per_request"],
        "hop_server_rps": http["rps"],
        "model_cpu_ms_per_patch": model_ms,
        "batch": batch,
        "decode_cpu_ms": decode_ms,
        "floor_cpu_ms": total,
        "bound_rps": len(os.sched_getaffinity(0)) * 1000 / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes of `bcd serve` (--workers N)"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the CPU floor per request at the highest concurrency",
    )
    parser.add_argument("--hop-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hop_server:
        hop_server(args.hop_server)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    if not PATCH.is_file():
        sys.exit(f"the real patch {PATCH} is missing (../shared/data)")

    results: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)), "workers": args.workers}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model_dir = cnn_model(work / "model")
        deploy(model_dir, work / "home")
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT.format(patch=PATCH))
        body = PATCH.read_bytes()
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "BCD_HOME": str(work / "home"), "BCD_DEFAULT_ENDPOINT": ENDPOINT}

        # A deployed server starts from compiled bytecode; compile the package
        # once (PYTHONDONTWRITEBYTECODE would otherwise recompile it every start).
        compileall.compile_dir(ROOT / "bcd", quiet=1)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        serve = [str(bin_dir / "bcd"), "serve", "--port", str(port), "--workers", str(args.workers)]
        with server(serve, env) as process:
            results["startup_s"] = first_answer(url, body, process) - started
            print(f"bcd serve: first answer {results['startup_s']:.2f} s after start", flush=True)
            if args.workers > 1:  # every worker loaded before the load starts
                all_ready_s = all_workers_ready(url) - started
                results["all_workers_ready_s"] = all_ready_s
                print(f"bcd serve: all workers ready {all_ready_s:.2f} s after start", flush=True)
            results["bcd"] = {}
            for connections in args.concurrency:
                batches_before = mean_batch_size(url)
                results["bcd"][connections] = wrk(
                    url, script, connections, args.duration, process.pid
                )
                batches_after = mean_batch_size(url)
                results["bcd"][connections]["mean_batch"] = (
                    batches_after[0] - batches_before[0]
                ) / max(1.0, batches_after[1] - batches_before[1])
                print(f"bcd serve  c={connections:<3} {results['bcd'][connections]}", flush=True)
            results["batch"] = batch_throughput(url, model_dir, seconds=args.duration / 2)
            print(f"batch 256: {results['batch']}", flush=True)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        naive = [
            sys.executable,
            str(ROOT / "bench" / "naive_server.py"),
            str(model_dir),
            "--port",
            str(port),
        ]
        with server(naive, env) as process:
            first_answer(url, body, process)
            results["naive"] = {}
            for connections in args.concurrency:
                results["naive"][connections] = wrk(
                    url, script, connections, args.duration, process.pid
                )
                print(f"naive      c={connections:<3} {results['naive'][connections]}", flush=True)
        if args.floor:
            top = max(args.concurrency)
            batch = max(1, round(results["bcd"][top]["mean_batch"]))
            results["floor"] = floor(model_dir, script, top, args.duration, batch)
            print(f"floor      c={top:<3} {results['floor']}", flush=True)

    print()
    columns = f"{'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms':>7}"
    ours_label = f"bcd serve --workers {args.workers}"
    print(f"{'':>11} | {ours_label:^35} | {'naive baseline':^35} |")
    print(f"{'concurrency':>11} | {columns} | {columns} | rps ratio | cpu/request ratio")
    for connections in args.concurrency:
        ours, theirs = results["bcd"][connections], results["naive"][connections]
        ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("nan")
        efficiency = theirs["server_cpu_ms_per_request"] / ours["server_cpu_ms_per_request"]
        row = [
            f"{run['rps']:>9.0f} {run['p50_ms']:>8.2f} {run['p99_ms']:>8.2f} "
            f"{run['server_cpu_ms_per_request']:>7.2f}"
            for run in (ours, theirs)
        ]
        print(f"{connections:>11} | {row[0]} | {row[1]} | {ratio:>8.2f}x | {efficiency:.2f}x")
    batch = results["batch"]
    print(
        f"batch 256 /invocations: {batch['served_patches_per_s']:.0f} patches/s vs bare "
        f"ONNX Runtime {batch['bare_patches_per_s']:.0f} patches/s = {batch['ratio']:.2f}x "
        "(target >= 0.8x)"
    )
    print(f"startup to first answer: {results['startup_s']:.2f} s (target < 2 s)")
    if args.floor:
        bound, top = results["floor"], max(args.concurrency)
        ours = results["bcd"][top]
        print(
            f"CPU per request at c={top}: bcd serve {ours['server_cpu_ms_per_request']:.2f} ms "
            f"+ wrk {ours['wrk_cpu_ms_per_request']:.3f} ms; "
            f"floor {bound['floor_cpu_ms']:.2f} ms = "
            f"uvicorn hop server {bound['hop_server_cpu_ms']:.3f} + wrk {bound['wrk_cpu_ms']:.3f} "
            f"+ model {bound['model_cpu_ms_per_patch']:.3f} (batch {bound['batch']}) "
            f"+ decode {bound['decode_cpu_ms']:.3f}; at full use of "
            f"{results['cores']} cores that floor allows {bound['bound_rps']:.0f} requests/s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
