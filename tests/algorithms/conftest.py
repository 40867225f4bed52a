"""Fixtures for the algorithm tests: tiny packed channels and the training contract env."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Keep torch to one thread: the machine is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Packed ``train``/``validation`` split folders of a small synthetic dataset."""
    from bcd.data import open_split
    from bcd.testing import make_synthetic_dataset

    settings = Settings(home=tmp_path_factory.mktemp("algorithms-home"))
    make_synthetic_dataset("algo", settings, n_patients=8, patches_per_patient=12, seed=3)
    folders = {}
    for split in ("train", "validation"):
        path = open_split("algo", split, settings).path
        assert path is not None
        folders[split] = path
    return folders


def contract_env(
    job: Path, channels: dict[str, Path], *, checkpoints: bool = True, **extra: str
) -> dict[str, str]:
    """The ``SM_*`` environment of a one-process job rooted at ``job``."""
    env = {
        "SM_MODEL_DIR": str(job / "model"),
        "SM_OUTPUT_DATA_DIR": str(job / "output"),
        "SM_CHANNEL_TRAIN": str(channels["train"]),
        "SM_CHANNEL_VALIDATION": str(channels["validation"]),
        "SM_CHANNELS": '["train", "validation"]',
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_CPUS": "1",
        "SM_NUM_GPUS": "0",
    }
    if checkpoints:
        env["BCD_CHECKPOINT_DIR"] = str(job / "checkpoints")
    env.update(extra)
    return env


@pytest.fixture
def contract(tmp_path: Path, channels: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Set the contract env in this process (for in-process ``main``); returns the job root."""
    for name in list(os.environ):
        if name.startswith("SM_") or name in ("BCD_CHECKPOINT_DIR", "RANK", "WORLD_SIZE"):
            monkeypatch.delenv(name)
    for name, value in contract_env(tmp_path, channels).items():
        monkeypatch.setenv(name, value)
    return tmp_path


def run_python(
    args: list[str], env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` with ``env`` added to a clean copy of this environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    return subprocess.run(
        [sys.executable, *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
