"""The trainer and the example script as real processes: metrics, artifacts, SIGTERM, gloo."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bcd.algorithms import get_algorithm, load_model
from bcd.algorithms.checkpoints import latest_checkpoint, load_checkpoint

from .conftest import ROOT, contract_env, run_python

TRAIN = ["-m", "bcd.algorithms.train"]
SMALL_BATCH = ["--mini_batch_size", "8"]


def test_cnn_job_metrics_artifacts_and_sigterm_stop(
    tmp_path: Path, channels: dict[str, Path]
) -> None:
    """One real job: metrics each epoch, SIGTERM -> checkpoint, servable artifacts, exit 0."""
    import os

    algorithm = get_algorithm("cnn")
    hyperparameters = {"epochs": 500, "mini_batch_size": 8, "checkpoint_frequency": 1000}
    argv = algorithm.command(algorithm.validate_hyperparameters(hyperparameters))
    process = subprocess.Popen(
        argv,
        env={**os.environ, **contract_env(tmp_path, channels)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 180
        for line in process.stdout:
            lines.append(line)
            if (
                line.startswith("#metric epoch=2 train:epoch_seconds")
                or time.monotonic() > deadline
            ):
                break
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    stdout = "".join(lines) + stdout
    assert process.returncode == 0, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr
    for definition in algorithm.metric_definitions:
        assert len(re.findall(definition["Regex"], stdout)) >= 2, definition["Name"]

    path = latest_checkpoint(tmp_path / "checkpoints")
    assert path is not None, "no checkpoint after SIGTERM"
    state = load_checkpoint(path)
    assert state["interrupted"] is True and 2 <= state["epoch"] < 500

    model_dir = tmp_path / "model"
    description = json.loads((model_dir / "model.json").read_text())
    assert description["algorithm"] == "cnn" and description["class_names"] == ["no IDC", "IDC"]
    assert description["input"]["shape"] == [3, 50, 50] and description["temperature"] == 1.0
    assert description["dataset"]["fingerprint"].startswith("sha256:")
    assert set(description["metrics"]) == {"best_epoch", "best", "final"}
    assert description["onnx"]["parity_max_abs_diff"] < 1e-4
    assert not list(model_dir.glob(".*tmp*"))

    # Serving's view: normalise as model.json says, run ONNX, compare with the torch weights.
    import onnxruntime

    from bcd.data import open_channel

    images = np.array(open_channel(channels["validation"]).images[:9])  # (9, 50, 50, 3)
    spec = description["input"]
    inputs = images.transpose(0, 3, 1, 2) / spec["scale"] - np.reshape(spec["mean"], (1, 3, 1, 1))
    inputs = (inputs / np.reshape(spec["std"], (1, 3, 1, 1))).astype(np.float32)
    session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"))
    onnx_logits = session.run(["logits"], {"images": inputs})[0]
    with torch.no_grad():
        torch_logits = load_model(model_dir)(torch.from_numpy(inputs)).numpy()
    assert onnx_logits.shape == (9, 2)
    assert np.abs(onnx_logits - torch_logits).max() < 1e-4
    weights = torch.load(model_dir / "model.pt", weights_only=True)
    assert "classifier.4.weight" in weights


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_processes_train_data_parallel_over_gloo(
    tmp_path: Path, channels: dict[str, Path]
) -> None:
    import os

    port = str(_free_port())
    processes = []
    for rank in range(2):
        job = tmp_path / f"algo-{rank + 1}"
        env = contract_env(
            job,
            channels,
            SM_HOSTS='["algo-1", "algo-2"]',
            SM_CURRENT_HOST=f"algo-{rank + 1}",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK="0",
            BCD_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, *TRAIN, "--algorithm", "cnn", "--epochs", "2", *SMALL_BATCH],
                env={**os.environ, **env},
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240))
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-2000:]
    primary, secondary = outputs
    assert "joined gloo process group as rank 0 of 2" in primary[1]
    assert len(re.findall(r"#metric epoch=\d+ validation:bac=", primary[0])) == 2
    assert "#metric" not in secondary[0], "only the primary reports metrics"
    assert (tmp_path / "algo-1" / "model" / "model.json").is_file()
    assert not (tmp_path / "algo-2" / "model").exists(), "only the primary writes the model"
    description = json.loads((tmp_path / "algo-1" / "model" / "model.json").read_text())
    assert description["training"]["world_size"] == 2
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["epoch"] == 2


def test_example_script_runs_under_the_script_mode_contract(
    tmp_path: Path, channels: dict[str, Path]
) -> None:
    examples = ROOT / "examples" / "scripts"
    definitions = json.loads((examples / "metric_definitions.json").read_text())
    algorithm = get_algorithm("script")
    hyperparameters = algorithm.validate_hyperparameters(
        {"epochs": 2, "batch-size": 16, "learning-rate": 0.002}
    )
    argv = algorithm.command(hyperparameters, entry_point="train_cnn.py", source_dir=examples)
    env = contract_env(tmp_path, channels, checkpoints=False)
    result = run_python(argv[1:], env)
    assert result.returncode == 0, result.stderr[-2000:]
    for definition in definitions:
        assert len(re.findall(definition["Regex"], result.stdout)) == 2, definition["Name"]
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert state["10.weight"].shape == (2, 128)
    info = json.loads((tmp_path / "model" / "model-info.json").read_text())
    assert 0 <= info["best_val_bac"] <= 1


def test_example_script_reports_a_missing_channel(
    tmp_path: Path, channels: dict[str, Path]
) -> None:
    env = contract_env(tmp_path, channels, checkpoints=False)
    env["SM_CHANNEL_VALIDATION"] = str(tmp_path / "nowhere")
    result = run_python([str(ROOT / "examples" / "scripts" / "train_cnn.py"), "--epochs", "1"], env)
    assert result.returncode != 0 and "channel 'validation'" in result.stderr


@pytest.mark.parametrize("script", ["train_cnn.py"])
def test_example_script_does_not_import_bcd(script: str) -> None:
    source = (ROOT / "examples" / "scripts" / script).read_text()
    assert not re.search(r"^\s*(import|from)\s+bcd\b", source, re.MULTILINE)
