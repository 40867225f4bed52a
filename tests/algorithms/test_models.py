"""Network shapes, the 50x50 stems and loading ImageNet weights from a local file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bcd.algorithms.models import SmallCNN, build_model, build_resnet, load_pretrained
from bcd.errors import InvalidInputError


@pytest.mark.parametrize("num_classes", [2, 3])
def test_small_cnn_returns_logits(num_classes: int) -> None:
    model = SmallCNN(num_classes).eval()
    assert model(torch.randn(4, 3, 50, 50)).shape == (4, num_classes)


@pytest.mark.parametrize("num_layers", [18, 34, 50, 101, 152])
def test_resnet_depths_return_logits(num_layers: int) -> None:
    model = build_resnet(num_layers, 2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 50, 50)).shape == (2, 2)


@pytest.mark.parametrize(("stem", "stage4_side"), [("compact", 4), ("full", 7), ("imagenet", 2)])
def test_stems_set_the_feature_map_sizes(stem: str, stage4_side: int) -> None:
    model = build_resnet(18, 2, stem).eval()
    seen: list[tuple[int, ...]] = []
    model.layer4.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 50, 50))
    assert seen[0][-2:] == (stage4_side, stage4_side)
    if stem != "imagenet":
        assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, torch.nn.Identity)


def test_unknown_stem_and_depth_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="compact, full, imagenet"):
        build_resnet(18, 2, "huge")
    with pytest.raises(InvalidInputError, match="18, 34, 50, 101, 152"):
        build_resnet(19, 2)


def _imagenet_file(tmp_path: Path, num_layers: int = 18) -> tuple[Path, dict]:
    from torchvision.models import resnet

    torch.manual_seed(1)
    builder = {18: resnet.resnet18, 34: resnet.resnet34}[num_layers]
    state = builder(weights=None, num_classes=1000).state_dict()
    path = tmp_path / f"resnet{num_layers}-imagenet.pth"
    torch.save(state, path)
    return path, state


def test_pretrained_weights_load_with_a_cropped_stem(tmp_path: Path) -> None:
    path, imagenet = _imagenet_file(tmp_path)
    model = build_model(
        "image-classification",
        {
            "image_shape": "3,50,50",
            "num_classes": 2,
            "num_layers": 18,
            "stem": "compact",
            "use_pretrained_model": True,
            "pretrained_weights": str(path),
        },
    )
    state = model.state_dict()
    assert torch.equal(state["layer3.1.conv2.weight"], imagenet["layer3.1.conv2.weight"])
    assert torch.equal(state["bn1.running_var"], imagenet["bn1.running_var"])
    assert torch.equal(state["conv1.weight"], imagenet["conv1.weight"][:, :, 2:5, 2:5])
    assert state["fc.weight"].shape == (2, 512)


def test_pretrained_weights_of_another_depth_are_refused(tmp_path: Path) -> None:
    path, _ = _imagenet_file(tmp_path, 34)
    with pytest.raises(InvalidInputError, match="do not fit this ResNet"):
        load_pretrained(build_resnet(18, 2), path)


@pytest.mark.parametrize("content", [b"", b"not a torch file"], ids=["empty", "garbage"])
def test_unreadable_pretrained_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match="cannot read pretrained weights"):
        load_pretrained(build_resnet(18, 2), path)


def test_missing_pretrained_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="never downloads"):
        load_pretrained(build_resnet(18, 2), tmp_path / "none.pth")
