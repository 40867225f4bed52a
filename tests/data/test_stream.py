"""The torch stream over packed shards: seeded epochs, rank and worker sharding."""

from __future__ import annotations

import numpy as np
import pytest

from bcd.data import ImportReport, open_split
from bcd.errors import InvalidInputError

torch = pytest.importorskip("torch")
from bcd.data.stream import PackedStream, distributed_position  # noqa: E402

torch.set_num_threads(1)


def test_stream_yields_every_record_once_as_chw_tensors(imported: ImportReport) -> None:
    split = open_split("syn", "train")
    stream = PackedStream(split, seed=1)
    items = list(stream)
    assert len(items) == len(split) == len(stream)
    image, label = items[0]
    assert image.shape == (3, 50, 50) and image.dtype == torch.uint8 and label in (0, 1)
    seen = sorted(np.asarray(img.permute(1, 2, 0)).tobytes() for img, _ in items)
    expected = sorted(np.asarray(split.images[i]).tobytes() for i in range(len(split)))
    assert seen == expected


def test_order_is_seeded_per_epoch(imported: ImportReport) -> None:
    stream = PackedStream("dataset://syn/train", seed=3)
    first = stream.rank_indices().tolist()
    assert first == PackedStream("dataset://syn/train", seed=3).rank_indices().tolist()
    stream.set_epoch(1)
    second = stream.rank_indices().tolist()
    assert second != first and sorted(second) == sorted(first)
    assert PackedStream("dataset://syn/train", shuffle=False).rank_indices().tolist() == sorted(
        first
    )


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_partition_each_epoch(imported: ImportReport, world_size: int) -> None:
    split = open_split("syn", "train")
    for epoch in (0, 1):
        parts = []
        for rank in range(world_size):
            stream = PackedStream(split, seed=9, rank=rank, world_size=world_size)
            stream.set_epoch(epoch)
            parts.append(stream.rank_indices())
        assert len({len(part) for part in parts}) == 1, "ranks must stay in step"
        together = np.concatenate(parts)
        assert len(np.unique(together)) == len(together), "a record was seen twice"
        assert len(together) == len(split) - len(split) % world_size


def test_uneven_mode_keeps_every_record(imported: ImportReport) -> None:
    split = open_split("syn", "train")
    parts = [PackedStream(split, rank=r, world_size=3, even=False).rank_indices() for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(split)))


def test_dataloader_workers_split_the_rank(imported: ImportReport) -> None:
    split = open_split("syn", "validation")
    stream = PackedStream(split, seed=4, transform=lambda image: torch.from_numpy(image.copy()))
    loader = torch.utils.data.DataLoader(stream, batch_size=8, num_workers=2)
    images = torch.cat([batch for batch, _ in loader]).numpy()
    assert images.shape == (len(split), 50, 50, 3)
    rows = sorted(image.tobytes() for image in images)
    assert rows == sorted(np.asarray(split.images[i]).tobytes() for i in range(len(split)))


def test_stream_pickles_without_pixels(imported: ImportReport) -> None:
    import pickle

    stream = PackedStream("dataset://syn/train")
    payload = pickle.dumps(stream)
    assert len(payload) < 20_000
    restored = pickle.loads(payload)
    assert len(list(restored)) == len(stream)


def test_labels_follow_their_images(imported: ImportReport) -> None:
    split = open_split("syn", "train")
    lookup = {
        np.asarray(split.images[i]).tobytes(): int(split.labels[i]) for i in range(len(split))
    }
    for image, label in PackedStream(split, seed=2):
        assert lookup[image.permute(1, 2, 0).numpy().tobytes()] == label


@pytest.mark.parametrize(("rank", "world"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_is_refused(rank: int, world: int) -> None:
    with pytest.raises(InvalidInputError, match="rank"):
        distributed_position(rank, world)


def test_environment_gives_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_position() == (1, 4)


def test_batched_stream_matches_the_record_stream(imported: ImportReport) -> None:
    split = open_split("syn", "train")
    records = list(PackedStream(split, seed=6))
    batches = list(PackedStream(split, seed=6, batch_size=16))
    assert all(images.shape[1:] == (3, 50, 50) for images, _ in batches)
    assert [len(labels) for _, labels in batches][:-1] == [16] * (len(batches) - 1)
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert torch.equal(images, torch.stack([image for image, _ in records]))
    assert labels.tolist() == [label for _, label in records]


def test_custom_transform_applies_per_record(imported: ImportReport) -> None:
    stream = PackedStream("dataset://syn/test", transform=lambda image: float(image.mean()))
    values = [value for value, _ in stream]
    assert len(values) == len(stream) and all(isinstance(v, float) for v in values)
