"""Fixtures of the evaluation tests: a tiny ONNX model, a synthetic dataset, real patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bcd import config, db

# Small real patients with both classes (about 100 patches each).
REAL_TEST_PATIENTS = ("10257", "10274", "10275", "10276", "10303", "10306")
REAL_VALIDATION_PATIENTS = ("12810", "12817", "12820", "12822")


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A real ONNX model folder that scores dark, purple patches as IDC."""
    from bcd.testing.models import write_tiny_model

    return write_tiny_model(tmp_path / "tiny-model")


@pytest.fixture
def linear_model(tmp_path: Path) -> Path:
    """A model folder whose logits are a fixed random linear map of the pixels.

    Unlike ``tiny_model`` it is not rotation invariant, so the 8 dihedral views
    of test-time augmentation give different answers.
    """
    from onnx import TensorProto, helper, numpy_helper

    from bcd.testing.models import write_tiny_model

    folder = write_tiny_model(tmp_path / "linear-model", temperature=1.5)
    weights = np.random.default_rng(0).normal(0, 0.002, (3 * 50 * 50, 2)).astype(np.float32)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
        ],
        name="linear",
        inputs=[helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 50, 50])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    return folder


@pytest.fixture(scope="module")
def synthetic_settings(tmp_path_factory: pytest.TempPathFactory):
    """Settings of a home holding dataset ``syn`` (12 patients, split 0.7/0.15/0.15)."""
    from bcd.testing import make_synthetic_dataset

    settings = config.Settings(home=tmp_path_factory.mktemp("evaluation-home"))
    make_synthetic_dataset("syn", settings, n_patients=12, patches_per_patient=25, seed=3)
    yield settings
    db.dispose_engines()


@pytest.fixture(scope="session")
def real_folders(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(evaluation folder, validation folder) of real patients in the dataset layout."""
    from bcd.testing import copy_real_patients

    root = tmp_path_factory.mktemp("real")
    evaluated = copy_real_patients(shared_data, root / "test", REAL_TEST_PATIENTS)
    validation = copy_real_patients(shared_data, root / "validation", REAL_VALIDATION_PATIENTS)
    return evaluated, validation
