"""Vectorised augmentation: every output is a real transform of its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bcd.algorithms.augment import (
    BatchAugmenter,
    center_crop,
    color_jitter,
    normalize,
    random_affine,
    random_crop,
    random_dihedral,
)


@pytest.fixture
def batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8, generator=generator)


def _dihedral_group(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a (C, H, W) image."""
    variants = []
    for turned in (image, image.transpose(0, 2, 1)):
        for flipped in (turned, turned[:, ::-1], turned[:, :, ::-1], turned[:, ::-1, ::-1]):
            variants.append(flipped)
    return variants


def test_dihedral_gives_each_image_one_of_its_eight_symmetries(batch: torch.Tensor) -> None:
    output = random_dihedral(batch, torch.Generator().manual_seed(1)).numpy()
    seen = set()
    for source, result in zip(batch.numpy(), output, strict=True):
        matches = [i for i, v in enumerate(_dihedral_group(source)) if np.array_equal(v, result)]
        assert matches, "output is not a flip/rotation of its input"
        seen.add(matches[0])
    assert len(seen) > 3, "flips and transposes should vary across the batch"


def test_crop_is_a_window_of_the_reflect_padded_image(batch: torch.Tensor) -> None:
    output = random_crop(batch, (16, 16), 4, torch.Generator().manual_seed(2)).numpy()
    offsets = set()
    for source, result in zip(batch.numpy(), output, strict=True):
        padded = np.pad(source, ((0, 0), (4, 4), (4, 4)), mode="reflect")
        found = [
            (top, left)
            for top in range(padded.shape[1] - 15)
            for left in range(padded.shape[2] - 15)
            if np.array_equal(padded[:, top : top + 16, left : left + 16], result)
        ]
        assert found, "crop is not a window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 3


def test_augmenter_none_is_a_center_crop_and_others_keep_size(batch: torch.Tensor) -> None:
    plain = BatchAugmenter("none", (20, 20))
    assert torch.equal(plain.geometric(batch), batch)
    assert torch.equal(center_crop(batch, (10, 10)), batch[:, :, 5:15, 5:15])
    for kind in ("crop", "crop_color", "crop_color_transform"):
        augmenter = BatchAugmenter(kind, (20, 20), torch.Generator().manual_seed(3))
        geometric = augmenter.geometric(batch)
        assert geometric.dtype == torch.uint8 and geometric.shape == batch.shape
        photometric = augmenter.photometric(geometric.float())
        assert photometric.shape == batch.shape
        assert float(photometric.min()) >= 0 and float(photometric.max()) <= 255


def test_augmenter_is_reproducible_from_its_seed(batch: torch.Tensor) -> None:
    def run() -> torch.Tensor:
        augmenter = BatchAugmenter(
            "crop_color_transform", (20, 20), torch.Generator().manual_seed(5)
        )
        return augmenter.photometric(augmenter.geometric(batch).float())

    assert torch.equal(run(), run())


def test_unknown_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown augmentation_type"):
        BatchAugmenter("mixup", (50, 50))


def test_color_jitter_matches_the_per_step_definition(batch: torch.Tensor) -> None:
    images = batch.float()
    generator = torch.Generator().manual_seed(6)
    jittered = color_jitter(images, generator)
    # Redo the same draws step by step: brightness·gain, saturation, contrast.
    generator = torch.Generator().manual_seed(6)
    factors = 1.0 + 0.4 * (torch.rand(16, 3, generator=generator) - 0.5)
    gains = 1.0 + 0.1 * (torch.rand(16, 3, generator=generator) - 0.5)
    x = images * factors[:, 0].view(-1, 1, 1, 1) * gains.view(16, 3, 1, 1)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    gray = (x * weights).sum(1, keepdim=True)
    x = gray + (x - gray) * factors[:, 2].view(-1, 1, 1, 1)
    mean = gray.mean(dim=(2, 3), keepdim=True)
    x = mean + (x - mean) * factors[:, 1].view(-1, 1, 1, 1)
    assert torch.allclose(jittered, x.clamp(0, 255), atol=1e-3)


def test_affine_warp_changes_images_but_keeps_range(batch: torch.Tensor) -> None:
    images = batch.float()
    warped = random_affine(images, torch.Generator().manual_seed(7))
    assert warped.shape == images.shape and not torch.equal(warped, images)
    assert float(warped.min()) >= 0 and float(warped.max()) <= 255


def test_normalize_follows_model_json(batch: torch.Tensor) -> None:
    mean, std = torch.tensor([0.8, 0.6, 0.7]), torch.tensor([0.1, 0.2, 0.15])
    expected = (batch.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    result = normalize(batch.permute(0, 2, 3, 1).permute(0, 3, 1, 2), mean, std)
    assert torch.allclose(result, expected, atol=1e-5) and result.is_contiguous()
