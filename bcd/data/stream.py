"""A PyTorch ``IterableDataset`` over a packed split ("Pipe mode" without decoding).

Each epoch visits a seeded permutation of the records, split first across
``torch.distributed`` ranks and then across ``DataLoader`` workers, so no
record is seen twice per epoch anywhere. Reads are blocks of memory-mapped
records (sorted within a block for locality), not PNG decodes.

Usage::

    dataset = PackedStream("dataset://idc/train", seed=42)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=2)
    for epoch in range(epochs):
        dataset.set_epoch(epoch)        # like DistributedSampler.set_epoch
        for images, labels in loader:   # images (B, 3, 50, 50) uint8, labels (B,) int64
            ...

This module imports torch; the rest of :mod:`bcd.data` does not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from bcd.config import Settings
from bcd.data._packed import PackedSplit
from bcd.errors import InvalidInputError

Transform = Callable[[np.ndarray], Any]
"""Maps one (50, 50, 3) uint8 image to what the stream yields in its place."""


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """The default transform: (50, 50, 3) uint8 array → (3, 50, 50) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def distributed_position(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's ``(rank, world_size)``.

    Explicit arguments win; then an initialised ``torch.distributed`` group; then
    the ``RANK`` / ``WORLD_SIZE`` environment variables; then ``(0, 1)``.

    Raises:
        InvalidInputError: When the rank is outside ``[0, world_size)``.
    """
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            found_rank, found_world = (
                torch.distributed.get_rank(),
                torch.distributed.get_world_size(),
            )
        else:
            found_rank = int(os.environ.get("RANK", "0"))
            found_world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = found_rank if rank is None else rank
        world_size = found_world if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(f"rank {rank} is not within a world of {world_size} process(es)")
    return rank, world_size


class PackedStream(IterableDataset):  # type: ignore[type-arg]
    """Stream ``(image, label)`` pairs (or whole batches) from a packed split.

    Args:
        source: A :class:`~bcd.data.PackedSplit`, or a channel URI/path for
            :func:`bcd.data.open_channel` (``dataset://NAME/SPLIT``, a folder, an
            fsspec URL — remote ones are cached locally first).
        shuffle: Visit records in a new seeded order each epoch.
        seed: Base seed; the order of epoch ``e`` depends on ``(seed, e)`` only.
        transform: Applied to each (50, 50, 3) uint8 image; default
            :func:`to_chw_tensor`.
        rank: Override the ``torch.distributed`` rank.
        world_size: Override the ``torch.distributed`` world size.
        even: Drop up to ``world_size - 1`` records per epoch so every rank yields
            the same count (keeps DDP ranks in step); ``False`` keeps them all.
        block: Records read per memory-map access.
        batch_size: Yield whole batches ``(images (B, 3, 50, 50), labels (B,))``
            instead of records (use ``DataLoader(stream, batch_size=None)``); the
            fastest way to read. The last batch of an epoch may be smaller.
        settings: For resolving ``source`` URIs.
    """

    def __init__(
        self,
        source: PackedSplit | str | os.PathLike[str],
        *,
        shuffle: bool = True,
        seed: int = 0,
        transform: Transform | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        even: bool = True,
        block: int = 256,
        batch_size: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__()
        if isinstance(source, PackedSplit):
            self._split: PackedSplit | None = source
        else:
            from bcd.data import open_channel

            self._split = open_channel(source, settings)
        self._path = self._split.path
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform or to_chw_tensor
        self.rank, self.world_size = distributed_position(rank, world_size)
        self.even = even
        self.block = max(1, block)
        if batch_size is not None and batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1; got {batch_size}")
        self.batch_size = batch_size
        self.epoch = 0

    @property
    def split(self) -> PackedSplit:
        """The packed split streamed (reopened lazily in worker processes)."""
        if self._split is None:
            assert self._path is not None
            self._split = PackedSplit.open(self._path)
        return self._split

    def __getstate__(self) -> dict[str, Any]:
        # Workers started by spawn reopen the memory map instead of receiving
        # a pickled copy of every pixel.
        state = dict(self.__dict__)
        if self._path is not None:
            state["_split"] = None
        return state

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        self.epoch = int(epoch)

    def rank_indices(self) -> np.ndarray:
        """Record indices this rank visits in the current epoch, in order."""
        count = len(self.split)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(count)
        else:
            order = np.arange(count)
        if self.even:
            order = order[: count - count % self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        """Records this rank yields per epoch (over all of its DataLoader workers)."""
        return len(self.rank_indices())

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        indices = self.rank_indices()
        worker = get_worker_info()
        if worker is not None:
            indices = indices[worker.id :: worker.num_workers]
        step = self.batch_size or self.block
        for start in range(0, len(indices), step):
            images, labels = self._read(indices[start : start + step])
            if self.batch_size:
                yield self._batch(images), torch.from_numpy(labels)
            elif self.transform is to_chw_tensor:
                # One transpose per block instead of one per record.
                tensors = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
                for position, label in enumerate(labels.tolist()):
                    yield tensors[position], label
            else:
                for image, label in zip(images, labels.tolist(), strict=True):
                    yield self.transform(image), label

    def _read(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # (n, 50, 50, 3) uint8 in the order of `chosen`, read in ascending order.
        split = self.split
        ascending = np.argsort(chosen, kind="stable")
        images = np.empty((len(chosen), *split.images.shape[1:]), np.uint8)
        images[ascending] = split.images[chosen[ascending]]
        return images, np.asarray(split.labels[chosen], np.int64)

    def _batch(self, images: np.ndarray) -> Any:
        if self.transform is to_chw_tensor:
            return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return torch.stack([torch.as_tensor(self.transform(image)) for image in images])
