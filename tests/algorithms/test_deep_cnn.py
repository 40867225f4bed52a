"""The deep small-input network (``architecture=deep``) and H&E stain jitter."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from bcd.algorithms._builtin import CNN, IMAGE_CLASSIFICATION
from bcd.algorithms.augment import BatchAugmenter, hed_jitter
from bcd.algorithms.models import DeepCNN, SmallCNN, build_model
from bcd.errors import InvalidInputError


def test_architecture_hyperparameter_picks_the_network() -> None:
    assert isinstance(build_model("cnn", CNN.validate_hyperparameters({})), SmallCNN)
    deep = build_model("cnn", CNN.validate_hyperparameters({"architecture": "deep"}))
    assert isinstance(deep, DeepCNN)
    with pytest.raises(InvalidInputError, match="original, deep"):
        CNN.validate_hyperparameters({"architecture": "wide"})


@pytest.mark.parametrize("size", [50, 64])
def test_deep_cnn_returns_logits_for_any_input_size(size: int) -> None:
    model = DeepCNN(2).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, size, size)).shape == (3, 2)
    # A ninth of the original network's parameters.
    assert sum(p.numel() for p in model.parameters()) * 8 < sum(
        p.numel() for p in SmallCNN(2).parameters()
    )


def test_deep_cnn_exports_to_onnx_with_matching_outputs() -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = DeepCNN(2)
    model.train()
    with torch.no_grad():  # give batch norm non-trivial running statistics
        for _ in range(3):
            model(torch.randn(16, 3, 50, 50) * 2 + 1)
    model.eval()
    buffer = io.BytesIO()
    example = torch.randn(4, 3, 50, 50)
    torch.onnx.export(
        model,
        (example,),
        buffer,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": example.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(example).numpy(), rtol=1e-4, atol=1e-5)


def test_stain_jitter_hyperparameter_is_validated() -> None:
    for algorithm in (CNN, IMAGE_CLASSIFICATION):
        assert algorithm.validate_hyperparameters({})["stain_jitter"] == 0.0
        assert algorithm.validate_hyperparameters({"stain_jitter": "0.05"})["stain_jitter"] == 0.05
        with pytest.raises(InvalidInputError, match="stain_jitter"):
            algorithm.validate_hyperparameters({"stain_jitter": "-0.1"})


def _patches(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (8, 3, 20, 20), generator=generator).float()


def test_hed_jitter_at_zero_strength_is_the_identity() -> None:
    images = _patches()
    out = hed_jitter(images, 0.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, images, atol=1e-3, rtol=0)


def test_hed_jitter_follows_the_stain_space_definition() -> None:
    images = _patches()
    sigma = 0.1
    out = hed_jitter(images, sigma, torch.Generator().manual_seed(2))
    # Redo it pixel by pixel: OD -> stain concentrations -> alpha, beta -> OD -> RGB.
    generator = torch.Generator().manual_seed(2)
    alpha = 1.0 + sigma * (2 * torch.rand(8, 3, generator=generator) - 1)
    beta = sigma * (2 * torch.rand(8, 3, generator=generator) - 1)
    stains = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    stains = stains / stains.norm(dim=1, keepdim=True)
    for index in range(8):
        od = -torch.log((images[index].reshape(3, -1).T + 1) / 256)  # (P, 3) rows
        concentrations = od @ torch.linalg.inv(stains)
        jittered = (concentrations * alpha[index] + beta[index]) @ stains
        rgb = (256 * torch.exp(-jittered) - 1).clamp(0, 255).T.reshape(3, 20, 20)
        torch.testing.assert_close(out[index], rgb, atol=1e-2, rtol=1e-4)
    assert (out - images).abs().mean() > 1.0
    assert out.min() >= 0 and out.max() <= 255


def test_augmenter_applies_stain_jitter_only_when_asked() -> None:
    images = _patches()
    plain = BatchAugmenter("crop", (20, 20), torch.Generator().manual_seed(3))
    stained = BatchAugmenter("crop", (20, 20), torch.Generator().manual_seed(3), stain_jitter=0.2)
    off = BatchAugmenter("none", (20, 20), torch.Generator().manual_seed(3), stain_jitter=0.2)
    torch.testing.assert_close(plain.photometric(images.clone()), images)
    assert not torch.allclose(stained.photometric(images.clone()), images)
    torch.testing.assert_close(off.photometric(images.clone()), images)
    with pytest.raises(ValueError, match="stain_jitter"):
        BatchAugmenter("crop", (20, 20), stain_jitter=2.0)
