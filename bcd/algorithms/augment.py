"""Batched, vectorised augmentation and normalisation of uint8 patches.

Every transform acts on a whole batch at once (no Python loop over images) so
the data path stays far cheaper than a training step:

- dihedral group (every type but ``none``): random horizontal flip, vertical
  flip and transpose — together all 8 flips and 90° rotations, to which
  histology is invariant;
- ``crop``: a random crop of ``image_shape`` from the patch reflect-padded by
  4 pixels (a shift of up to ±4 px);
- ``crop_color``: plus brightness, contrast, saturation and per-channel
  (stain) gain jitter;
- ``crop_color_transform``: plus a small random affine warp (rotation ±15°,
  scale 0.9–1.1, shear ±5°) with reflected borders.

``stain_jitter`` σ > 0 adds, with every type but ``none``, a random change of
the haematoxylin and eosin stain amounts (Tellez et al. 2018, "HED jitter"):
each pixel's optical density is split into H, E and DAB concentrations with
the Ruifrok–Johnston stain vectors, each concentration is scaled by
U(1 − σ, 1 + σ) and shifted by U(−σ, σ), and the result is mixed back to RGB.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAD = 4


class BatchAugmenter:
    """Applies one ``augmentation_type`` to batches of patches.

    Args:
        augmentation_type: ``none``, ``crop``, ``crop_color`` or
            ``crop_color_transform``.
        image_size: (height, width) of the output.
        generator: Source of randomness (seeded by the trainer).
        stain_jitter: Strength σ of the H&E stain jitter; 0 turns it off.
    """

    def __init__(
        self,
        augmentation_type: str,
        image_size: tuple[int, int],
        generator: torch.Generator | None = None,
        stain_jitter: float = 0.0,
    ) -> None:
        if augmentation_type not in ("none", "crop", "crop_color", "crop_color_transform"):
            raise ValueError(f"unknown augmentation_type {augmentation_type!r}")
        if not 0.0 <= stain_jitter <= 1.0:
            raise ValueError(f"stain_jitter must lie in [0, 1], got {stain_jitter}")
        self.augmentation_type = augmentation_type
        self.stain_jitter = stain_jitter
        self.image_size = image_size
        self.generator = generator

    def geometric(self, images: torch.Tensor) -> torch.Tensor:
        """Crop and dihedral transforms on uint8 NCHW images.

        Args:
            images: (N, 3, H, W) uint8.

        Returns:
            (N, 3, h, w) uint8, (h, w) = ``image_size``.
        """
        if self.augmentation_type == "none":
            return center_crop(images, self.image_size)
        return random_crop(images, self.image_size, PAD, self.generator, dihedral=True)

    def photometric(self, images: torch.Tensor) -> torch.Tensor:
        """Colour jitter and affine warp on float images in [0, 255].

        Args:
            images: (N, 3, h, w) float32.

        Returns:
            The augmented images, same shape, clamped to [0, 255].
        """
        if self.stain_jitter > 0 and self.augmentation_type != "none":
            images = hed_jitter(images, self.stain_jitter, self.generator)
        if self.augmentation_type in ("crop_color", "crop_color_transform"):
            images = color_jitter(images, self.generator)
        if self.augmentation_type == "crop_color_transform":
            images = random_affine(images, self.generator)
        return images


def to_nchw(images_nhwc: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) → (N, 3, H, W), contiguous."""
    return images_nhwc.permute(0, 3, 1, 2).contiguous()


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(pixel / 255 - mean) / std`` per channel, as in ``model.json``.

    Args:
        images: (N, 3, H, W) uint8 or float in [0, 255].
        mean: (3,) channel means on the 0–1 scale.
        std: (3,) channel standard deviations on the 0–1 scale.

    Returns:
        (N, 3, H, W) float32 in standard (NCHW-contiguous) layout.
    """
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    shift = (mean / std).view(1, -1, 1, 1)
    # Batches arrive as views of NHWC memory; convolutions are fastest on NCHW.
    images = images.to(torch.float32, memory_format=torch.contiguous_format)
    return torch.addcmul(-shift, images, scale)


def center_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size`` window of (N, C, H, W) images."""
    height, width = images.shape[-2:]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return images[..., top : top + size[0], left : left + size[1]]


def random_crop(
    images: torch.Tensor,
    size: tuple[int, int],
    pad: int,
    generator: torch.Generator | None,
    dihedral: bool = False,
) -> torch.Tensor:
    """Per-image random crops of ``size`` from reflect-padded images.

    One gather does it all: each output pixel's index is mapped through the
    optional flips/transpose and the reflection, so no padded or flipped copy
    is made and uint8 stays uint8.

    Args:
        images: (N, C, H, W).
        size: (h, w) of the output; at most (H + 2·pad, W + 2·pad).
        pad: Reflection padding on every side.
        generator: Randomness.
        dihedral: Also apply a random flip/transpose (one of the 8 symmetries
            of a square; flips only when ``h != w``).

    Returns:
        (N, C, h, w).
    """
    count, channels, height, width = images.shape
    device = images.device
    out_h, out_w = size
    top = torch.randint(0, height + 2 * pad - out_h + 1, (count, 1), generator=generator)
    left = torch.randint(0, width + 2 * pad - out_w + 1, (count, 1), generator=generator)
    steps_h, steps_w = torch.arange(out_h).view(1, -1), torch.arange(out_w).view(1, -1)
    transpose = torch.zeros(count, dtype=torch.bool)
    if dihedral:
        flips = torch.rand(count, 3, generator=generator) < 0.5  # (N, 3)
        steps_h = torch.where(flips[:, :1], out_h - 1 - steps_h, steps_h)  # (N, h)
        steps_w = torch.where(flips[:, 1:2], out_w - 1 - steps_w, steps_w)  # (N, w)
        if out_h == out_w:
            transpose = flips[:, 2]
    # Source row offset and column of each output row/column, per image.
    row_offsets = _reflect(top + steps_h - pad, height) * width  # (N, h)
    source_cols = _reflect(left + steps_w - pad, width)  # (N, w)
    base = (torch.arange(count) * (height * width)).view(-1, 1, 1)
    straight = base + row_offsets[:, :, None] + source_cols[:, None, :]  # (N, h, w)
    if bool(transpose.any()):
        swapped = base + row_offsets[:, None, :] + source_cols[:, :, None]  # (N, h, w)
        straight = torch.where(transpose.view(-1, 1, 1), swapped, straight)
    pixels = images.permute(0, 2, 3, 1).reshape(-1, channels)  # (N·H·W, C)
    cropped = pixels.index_select(0, straight.view(-1).to(device))  # (N·h·w, C)
    return cropped.view(count, out_h, out_w, channels).permute(0, 3, 1, 2)


def _reflect(index: torch.Tensor, length: int) -> torch.Tensor:
    """Reflect out-of-range indices back into [0, length) (no edge repeat)."""
    index = index.abs()
    return torch.where(index > length - 1, 2 * (length - 1) - index, index)


def random_dihedral(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random flips and (for square images) transposes: all 8 symmetries of a square.

    Args:
        images: (N, C, H, W).
        generator: Randomness.

    Returns:
        (N, C, H, W).
    """
    height, width = images.shape[-2:]
    return random_crop(images, (height, width), 0, generator, dihedral=True)


_GRAY = (0.299, 0.587, 0.114)


def color_jitter(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast, saturation (±20 %) and stain gain (±5 %) per image.

    All four are linear in the pixel, so they fold into one 3×3 colour matrix
    and offset per image, applied with a single batched matrix product.

    Args:
        images: (N, 3, H, W) float in [0, 255].
        generator: Randomness.

    Returns:
        (N, 3, H, W) float in [0, 255].
    """
    count, channels, height, width = images.shape
    factors = 1.0 + 0.4 * (torch.rand(count, 3, generator=generator) - 0.5)  # (N, 3)
    gains = 1.0 + 0.1 * (torch.rand(count, 3, generator=generator) - 0.5)  # (N, 3)
    brightness, contrast, saturation = factors[:, 0], factors[:, 1], factors[:, 2]
    weights = torch.tensor(_GRAY)  # (3,)
    scale = torch.diag_embed(brightness[:, None] * gains)  # (N, 3, 3): brightness and stain
    # Saturation blends each pixel with its grey value: s·I + (1 − s)·1·wᵀ.
    blend = saturation.view(-1, 1, 1) * torch.eye(3) + (1 - saturation).view(-1, 1, 1) * (
        torch.ones(3, 1) @ weights.view(1, 3)
    )
    matrix = contrast.view(-1, 1, 1) * blend @ scale  # (N, 3, 3)
    # Contrast pulls towards the mean grey level, which saturation leaves unchanged.
    channel_means = images.mean(dim=(2, 3)).cpu()  # (N, 3)
    mean_gray = ((channel_means * brightness[:, None] * gains) * weights).sum(dim=1)  # (N,)
    offset = ((1 - contrast) * mean_gray).view(-1, 1, 1)  # (N, 1, 1)
    flat = images.reshape(count, channels, height * width)  # (N, 3, HW)
    mixed = torch.baddbmm(offset.to(images.device), matrix.to(images.device), flat)
    return mixed.view(count, channels, height, width).clamp_(0.0, 255.0)


#: Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB) in
#: optical-density space, each normalised to unit length below.
_STAINS_OD = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_STAINS_OD = _STAINS_OD / _STAINS_OD.norm(dim=1, keepdim=True)
_OD_FROM_STAINS_INVERSE = torch.linalg.inv(_STAINS_OD)


def hed_jitter(
    images: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Random stain-concentration change in H&E(-DAB) space, per image.

    With optical density ``od = -ln((I + 1) / 256)`` written as concentrations
    times stain vectors, ``od = c · S``, the jitter ``c' = α ⊙ c + β`` is linear
    in ``od``: ``od' = od · S⁻¹ diag(α) S + β · S``. One 3×3 matrix and offset
    per image, one batched product for the batch.

    Args:
        images: (N, 3, H, W) float in [0, 255].
        sigma: Jitter strength: α ~ U(1 − σ, 1 + σ), β ~ U(−σ, σ).
        generator: Randomness.

    Returns:
        (N, 3, H, W) float in [0, 255].
    """
    count, channels, height, width = images.shape
    alpha = 1.0 + sigma * (2 * torch.rand(count, 3, generator=generator) - 1)  # (N, 3)
    beta = sigma * (2 * torch.rand(count, 3, generator=generator) - 1)  # (N, 3)
    # Row-vector form od' = od @ A + b, applied column-wise below as Aᵀ @ od.
    mix = _OD_FROM_STAINS_INVERSE @ torch.diag_embed(alpha) @ _STAINS_OD  # (N, 3, 3)
    offset = (beta @ _STAINS_OD).unsqueeze(-1)  # (N, 3, 1)
    device = images.device
    optical = -torch.log((images.reshape(count, channels, height * width) + 1.0) / 256.0)
    jittered = torch.baddbmm(offset.to(device), mix.transpose(1, 2).to(device), optical)
    rgb = 256.0 * torch.exp(-jittered) - 1.0
    return rgb.view(count, channels, height, width).clamp_(0.0, 255.0)


def random_affine(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A small random rotation, scale and shear per image, reflected borders.

    Args:
        images: (N, C, H, W) float.
        generator: Randomness.

    Returns:
        (N, C, H, W) float.
    """
    count = images.shape[0]
    draws = torch.rand(count, 3, generator=generator)
    angle = (draws[:, 0] - 0.5) * math.radians(30)
    scale = 0.9 + 0.2 * draws[:, 1]
    shear = (draws[:, 2] - 0.5) * math.radians(10)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (cos + torch.tan(shear) * sin) / scale
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    warped = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return warped.clamp_(0.0, 255.0)
