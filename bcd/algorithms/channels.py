"""Training data for the built-in trainer: channels in, uint8 batches out.

A channel (``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``) is a packed split
folder opened with :func:`bcd.data.open_channel`; its images are a memory map
of (N, H, W, 3) uint8. :class:`BatchLoader` gathers each batch from it with one
vectorised fancy index (no per-image Python work, no PNG decoding), shuffled
with a per-epoch seed and sharded so each ``torch.distributed`` rank sees a
disjoint part of every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bcd.errors import BcdError, InvalidInputError

logger = logging.getLogger(__name__)

_STATS_SAMPLE = 20_000


@dataclass
class ChannelData:
    """The arrays of one channel.

    Attributes:
        images: (N, H, W, 3) uint8, a numpy array or memory map.
        labels: (N,) int64.
        fingerprint: Content hash of the split (lineage), or ``None``.
        dataset_name: Name of the dataset it came from, when known.
        mean: (3,) channel means on the 0–1 scale.
        std: (3,) channel standard deviations on the 0–1 scale.
    """

    images: np.ndarray
    labels: np.ndarray
    fingerprint: str | None = None
    dataset_name: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def from_arrays(
        cls, images: np.ndarray, labels: np.ndarray, fingerprint: str | None = None
    ) -> ChannelData:
        """In-memory channel (tests, notebooks); statistics computed from the images.

        Raises:
            InvalidInputError: For arrays of the wrong shape or type.
        """
        channel = cls(np.asarray(images), np.asarray(labels, dtype=np.int64), fingerprint)
        _check_arrays(channel, "in-memory")
        channel.mean, channel.std = compute_channel_stats(channel.images)
        return channel


def open_channel_data(path: str | Path, name: str) -> ChannelData:
    """Open a packed split folder as training data.

    Args:
        path: The channel folder (``SM_CHANNEL_<NAME>``).
        name: The channel name, for error messages (``"train"``).

    Returns:
        The channel's arrays, fingerprint and per-channel statistics.

    Raises:
        InvalidInputError: If the folder is missing, not a packed split, empty,
            or holds images of the wrong shape.
    """
    from bcd import data

    folder = Path(path)
    if not folder.exists():
        raise InvalidInputError(f"channel {name!r} folder {str(folder)!r} does not exist")
    try:
        split = data.open_channel(str(folder))
    except BcdError as error:
        raise InvalidInputError(f"channel {name!r} at {str(folder)!r}: {error}") from None
    channel = ChannelData(
        images=split.images,
        labels=np.asarray(split.labels, dtype=np.int64),
        fingerprint=getattr(split, "fingerprint", None),
        dataset_name=_dataset_name(split),
    )
    _check_arrays(channel, name)
    try:
        mean, std = split.channel_stats()
        channel.mean = _triple(mean)
        channel.std = _triple(std)
    except (AttributeError, NotImplementedError, ValueError, KeyError):
        channel.mean, channel.std = compute_channel_stats(channel.images)
    return channel


def compute_channel_stats(
    images: np.ndarray,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std (0–1 scale) of up to 20,000 evenly spaced images.

    Args:
        images: (N, H, W, 3) uint8.

    Returns:
        ``(mean, std)``, three floats each; std is at least 1e-3.
    """
    step = max(1, len(images) // _STATS_SAMPLE)
    sample = np.asarray(images[::step], dtype=np.float64) / 255.0  # (M, H, W, 3)
    mean = sample.mean(axis=(0, 1, 2))
    std = np.maximum(sample.std(axis=(0, 1, 2)), 1e-3)
    return _triple(mean), _triple(std)


class BatchLoader:
    """Shuffled, rank-sharded batches of uint8 NCHW tensors for one epoch at a time.

    Args:
        channel: The data.
        batch_size: Images per batch.
        shuffle: Shuffle with a seed derived from ``seed`` and the epoch.
        seed: Base seed; every rank must pass the same one.
        rank: This process's rank.
        world_size: Number of processes; each takes an equal, disjoint share.
        drop_uneven: Give every rank exactly the same number of samples (training
            under DDP needs equal batch counts); the few left over are skipped
            this epoch and, being reshuffled, seen in others.
    """

    def __init__(
        self,
        channel: ChannelData,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_uneven: bool = True,
    ) -> None:
        self.channel = channel
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_uneven = drop_uneven

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for ``epoch``, in visiting order."""
        count = len(self.channel)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(count)
        else:
            order = np.arange(count)
        if self.drop_uneven:
            share = count // self.world_size
            return order[self.rank * share : (self.rank + 1) * share]
        return np.array_split(order, self.world_size)[self.rank]

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        share = len(self.indices(0))
        return -(-share // self.batch_size)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)``: (B, 3, H, W) uint8 and (B,) int64 tensors."""
        for images, labels, _ in self.indexed_batches(epoch):
            yield images, labels

    def indexed_batches(
        self, epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like :meth:`batches`, plus each batch's (B,) int64 row indices in the channel."""
        indices = self.indices(epoch)
        for start in range(0, len(indices), self.batch_size):
            # Sorted indices read a memory map front to back; order inside a
            # batch does not matter to the gradient.
            batch = np.sort(indices[start : start + self.batch_size])
            images = torch.from_numpy(np.ascontiguousarray(self.channel.images[batch]))
            labels = torch.from_numpy(self.channel.labels[batch])
            rows = torch.from_numpy(batch.astype(np.int64))
            yield images.permute(0, 3, 1, 2), labels, rows  # (B, 3, H, W), (B,), (B,)


def _check_arrays(channel: ChannelData, name: str) -> None:
    images, labels = channel.images, channel.labels
    if len(labels) == 0:
        raise InvalidInputError(
            f"channel {name!r} is empty; give it a split with at least one image"
        )
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidInputError(
            f"channel {name!r} images must be (N, H, W, 3) uint8, "
            f"got {tuple(images.shape)} {images.dtype}"
        )
    if images.shape[0] != labels.shape[0]:
        raise InvalidInputError(
            f"channel {name!r} has {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if labels.min() < 0:
        raise InvalidInputError(f"channel {name!r} has negative labels")


def _dataset_name(split: Any) -> str | None:
    for attribute in ("dataset_name", "dataset", "name"):
        value = getattr(split, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _triple(values: Any) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in values)
    return first, second, third
