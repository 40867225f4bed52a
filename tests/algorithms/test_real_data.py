"""Real training on a few real patients (slow): cnn and ResNet-18 learn IDC."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bcd.algorithms import get_algorithm
from bcd.algorithms.metrics import METRIC_NAMES
from bcd.config import Settings

from .conftest import contract_env, run_python

PATIENTS = [
    "10253", "10254", "10255", "10256", "10257", "10260", "10262", "10264",
    "10268", "10272", "10273", "10274", "10275", "10276", "10277", "10286",
]  # fmt: skip


@pytest.fixture(scope="module")
def real_channels(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    from bcd.data import SplitSpec, import_dataset, open_split
    from bcd.testing import copy_real_patients

    root = tmp_path_factory.mktemp("real")
    settings = Settings(home=root / "home")
    tree = copy_real_patients(shared_data, root / "tree", PATIENTS)
    import_dataset(tree, "real", settings=settings, split=SplitSpec((0.7, 0.3), 42), workers=0)
    train, validation = (open_split("real", split, settings) for split in ("train", "validation"))
    assert not set(train.patient_ids) & set(validation.patient_ids), "patients leak across splits"
    return {"train": train.path, "validation": validation.path}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("algorithm", "hyperparameters"),
    [
        ("cnn", {"epochs": 4, "mini_batch_size": 64}),
        ("image-classification", {"epochs": 2, "num_layers": 18, "mini_batch_size": 64}),
    ],
    ids=["cnn", "resnet18"],
)
def test_real_patients_are_learned(
    tmp_path: Path, real_channels: dict[str, Path], algorithm: str, hyperparameters: dict
) -> None:
    spec = get_algorithm(algorithm)
    argv = spec.command(spec.validate_hyperparameters(hyperparameters))
    result = run_python(argv[1:], contract_env(tmp_path, real_channels, SM_NUM_CPUS="2"), 3600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in METRIC_NAMES:
        values = re.findall(rf"#metric epoch=\d+ {name}=(\S+)", result.stdout)
        assert len(values) == hyperparameters["epochs"], name
    description = json.loads((tmp_path / "model" / "model.json").read_text())
    best = description["metrics"]["best"]
    print(algorithm, json.dumps(best), description["training"]["epoch_seconds"])
    assert best["validation:bac"] > 0.7 and best["validation:auc"] > 0.75
