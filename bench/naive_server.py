"""The naive baseline for bench/serve_bench.py: FastAPI + torch eager, one forward per request.

What a first version of the API would look like: a plain ``def`` route
(FastAPI runs it in its thread pool), Pillow decoding, and one
``model(batch_of_one)`` per request, with torch's default threads. It
serves the same ``cnn`` weights (``model.pt`` + ``model.json``) as the
ONNX model that ``bcd serve`` runs.

    .venv/bin/python bench/naive_server.py MODEL_DIR --port 8090
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from bcd.algorithms import load_model


def build(model_dir: Path) -> FastAPI:
    """The baseline app for a model folder written by training."""
    spec = json.loads((model_dir / "model.json").read_text())
    model = load_model(model_dir)  # the same cnn weights, rebuilt from model.json + model.pt
    mean = np.asarray(spec["input"]["mean"], np.float32)
    std = np.asarray(spec["input"]["std"], np.float32)
    app = FastAPI()

    def score(body: bytes) -> dict[str, object]:
        image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.float32) / 255.0
        tensor = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            probabilities = torch.softmax(model(tensor), dim=1)[0].tolist()  # (2,)
        detected = probabilities[1] > probabilities[0]
        return {
            "probabilities": probabilities,
            "predicted_class": int(detected),
            "cancer_detected": detected,
            "message": "Cancer detected" if detected else "Cancer not detected",
        }

    @app.post("/predict-breast-cancer")
    async def predict(request: Request) -> dict[str, object]:
        # What a sync route does: the forward pass runs in FastAPI's thread pool.
        return await run_in_threadpool(score, await request.body())

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    uvicorn.run(
        build(args.model_dir),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
