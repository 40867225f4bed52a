"""Training functions on in-memory arrays: optimisers, schedules, selection, loaders, learning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bcd.algorithms.augment import BatchAugmenter
from bcd.algorithms.channels import BatchLoader, ChannelData
from bcd.algorithms.checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from bcd.algorithms.models import SmallCNN
from bcd.algorithms.training import (
    ModelSelection,
    class_weights,
    evaluate,
    learning_rate_at,
    make_optimizer,
    train_one_epoch,
    training_loss,
)
from bcd.errors import InvalidInputError

OPTIMIZER_HPS = {
    "learning_rate": 0.01,
    "weight_decay": 0.0,
    "momentum": 0.9,
    "beta_1": 0.8,
    "beta_2": 0.99,
    "eps": 1e-7,
    "gamma": 0.95,
}


@pytest.mark.parametrize(
    ("name", "cls", "check"),
    [
        ("sgd", torch.optim.SGD, {"nesterov": False, "momentum": 0.9}),
        ("nag", torch.optim.SGD, {"nesterov": True}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-7}),
        ("rmsprop", torch.optim.RMSprop, {"alpha": 0.95, "momentum": 0.9}),
    ],
)
def test_optimizers_take_sagemaker_names(name: str, cls: type, check: dict) -> None:
    optimizer = make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], OPTIMIZER_HPS)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01 and all(group[key] == value for key, value in check.items())


@pytest.mark.parametrize(
    ("name", "kernel"),
    [("sgd", "fused"), ("nag", "fused"), ("adam", "fused"), ("rmsprop", "foreach")],
)
def test_optimizers_update_with_one_fused_or_multi_tensor_kernel(name: str, kernel: str) -> None:
    model = SmallCNN()
    optimizer = make_optimizer(name, model.parameters(), {**OPTIMIZER_HPS, "weight_decay": 1e-4})
    assert optimizer.param_groups[0][kernel] is True
    reference = SmallCNN()
    reference.load_state_dict(model.state_dict())
    if name == "adam":
        plain: torch.optim.Optimizer = torch.optim.Adam(
            reference.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-4
        )
    elif name == "rmsprop":
        plain = torch.optim.RMSprop(
            reference.parameters(), lr=0.01, alpha=0.95, eps=1e-7, momentum=0.9, weight_decay=1e-4
        )
    else:
        plain = torch.optim.SGD(
            reference.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=name == "nag"
        )
    images = torch.randn(8, 3, 50, 50).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1] * 4)
    for net, opt in ((model, optimizer), (reference, plain)):
        net.eval()  # no dropout: both see the same function
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(net(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[key], rtol=1e-4, atol=1e-5)


def test_unknown_optimizer_lists_valid_ones() -> None:
    with pytest.raises(InvalidInputError, match="sgd, adam, rmsprop, nag"):
        make_optimizer("lion", [torch.nn.Parameter(torch.zeros(1))], OPTIMIZER_HPS)


def test_learning_rate_schedules() -> None:
    step = {"learning_rate": 1.0, "lr_scheduler": "step", "lr_scheduler_step": "2,4"}
    step |= {"lr_scheduler_factor": 0.5, "epochs": 6}
    assert [learning_rate_at(epoch, step) for epoch in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = {**step, "lr_scheduler": "cosine", "lr_scheduler_step": ""}
    rates = [learning_rate_at(epoch, cosine) for epoch in range(6)]
    assert (
        rates[0] == 1.0 and rates[3] == pytest.approx(0.5) and rates == sorted(rates, reverse=True)
    )
    constant = {**step, "lr_scheduler": "none"}
    assert {learning_rate_at(epoch, constant) for epoch in range(6)} == {1.0}


def test_balanced_class_weights_undo_the_two_to_one_imbalance() -> None:
    labels = np.array([0] * 200 + [1] * 100)
    weights = class_weights("balanced", labels, 2)
    assert weights is not None and weights.tolist() == pytest.approx([0.75, 1.5])
    assert class_weights("none", labels, 2) is None
    assert class_weights("1.0,3.0", labels, 2).tolist() == [1.0, 3.0]
    assert class_weights("balanced", np.zeros(4, int), 2).tolist() == pytest.approx([0.5, 1.0])


def test_training_loss_weights_classes_and_smooths_labels() -> None:
    labels = np.array([0] * 200 + [1] * 100)
    logits = torch.tensor([[4.0, -4.0], [-1.0, 1.0]])
    targets = torch.tensor([0, 1])
    log_p = torch.log_softmax(logits, dim=1)
    hard = training_loss({"class_weights": "none"}, labels, 2)
    assert hard(logits, targets).item() == pytest.approx(-(log_p[0, 0] + log_p[1, 1]).item() / 2)
    # Smoothing 0.2 of two classes: targets become 0.9 / 0.1.
    smooth = training_loss({"class_weights": "none", "label_smoothing": 0.2}, labels, 2)
    expected = -(0.9 * log_p[0, 0] + 0.1 * log_p[0, 1] + 0.9 * log_p[1, 1] + 0.1 * log_p[1, 0]) / 2
    assert smooth(logits, targets).item() == pytest.approx(expected.item())
    # A confident right answer still costs something under smoothing.
    assert smooth(logits[:1], targets[:1]).item() > 5 * hard(logits[:1], targets[:1]).item()
    balanced = training_loss({"class_weights": "balanced"}, labels, 2)
    assert balanced.weight is not None and balanced.weight.tolist() == pytest.approx([0.75, 1.5])


def test_model_selection_and_sagemaker_style_early_stopping() -> None:
    selection = ModelSelection(
        "validation:bac", patience=2, min_epochs=3, tolerance=0.01, enabled=True
    )
    values = [0.70, 0.80, 0.805, 0.804, 0.79]
    stops = []
    for epoch, value in enumerate(values, start=1):
        improved = selection.update(epoch, {"validation:bac": value})
        stops.append((improved, selection.should_stop(epoch)))
    # 0.805 is a new best but below the 1 % tolerance, so it does not reset the patience.
    assert stops == [(True, False), (True, False), (True, False), (False, True), (False, True)]
    assert selection.best_epoch == 3 and selection.best_value == 0.805


def test_model_selection_minimises_loss_and_ignores_nan() -> None:
    selection = ModelSelection(
        "validation:loss", patience=1, min_epochs=1, tolerance=0, enabled=False
    )
    selection.update(1, {"validation:loss": math.nan})
    assert selection.best_value is None
    for epoch, value in enumerate([0.5, 0.4, 0.6], start=2):
        selection.update(epoch, {"validation:loss": value})
    assert selection.best_epoch == 3 and not selection.should_stop(4)
    restored = ModelSelection("validation:loss", 1, 1, 0, False)
    restored.load_state(selection.state())
    assert restored.state() == selection.state()


def _channel(count: int, seed: int = 0) -> ChannelData:
    """Learnable arrays: IDC patches are darker."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    base = np.where(labels[:, None, None, None] == 1, 90, 170)
    images = np.clip(base + rng.normal(0, 30, (count, 50, 50, 3)), 0, 255).astype(np.uint8)
    return ChannelData.from_arrays(images, labels, fingerprint="sha256:test")


def test_loader_shards_are_disjoint_equal_and_reshuffled() -> None:
    channel = _channel(103)
    loaders = [
        BatchLoader(channel, 8, shuffle=True, seed=1, rank=r, world_size=3) for r in range(3)
    ]
    shards = [set(loader.indices(0).tolist()) for loader in loaders]
    assert all(len(shard) == 34 for shard in shards)
    assert not (shards[0] & shards[1] or shards[1] & shards[2] or shards[0] & shards[2])
    assert loaders[0].indices(0).tolist() != loaders[0].indices(1).tolist()
    assert len(loaders[0]) == 5
    evaluation = [
        BatchLoader(channel, 8, shuffle=False, rank=r, world_size=3, drop_uneven=False)
        for r in range(3)
    ]
    assert sorted(i for loader in evaluation for i in loader.indices(0)) == list(range(103))
    images, labels = next(loaders[0].batches(0))
    assert images.shape == (8, 3, 50, 50) and images.dtype == torch.uint8 and labels.shape == (8,)


def test_channel_arrays_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        ChannelData.from_arrays(np.zeros((0, 50, 50, 3), np.uint8), np.zeros(0))
    with pytest.raises(InvalidInputError, match="uint8"):
        ChannelData.from_arrays(np.zeros((2, 50, 50, 3), np.float32), np.zeros(2))
    with pytest.raises(InvalidInputError, match="2 images but 3 labels"):
        ChannelData.from_arrays(np.zeros((2, 50, 50, 3), np.uint8), np.zeros(3))


def test_one_epoch_learns_and_evaluate_reports_every_metric() -> None:
    torch.manual_seed(0)
    train, validation = _channel(256, 1), _channel(64, 2)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss(weight=class_weights("balanced", train.labels, 2))
    mean, std = torch.tensor(train.mean), torch.tensor(train.std)
    kwargs = {"batch_size": 64, "mean": mean, "std": std, "device": torch.device("cpu")}
    before, _, _ = evaluate(model, validation, image_size=(50, 50), **kwargs)
    loader = BatchLoader(train, 32, shuffle=True)
    augmenter = BatchAugmenter("crop_color", (50, 50), torch.Generator().manual_seed(0))
    for epoch in range(2):
        result = train_one_epoch(
            model,
            optimizer,
            criterion,
            loader,
            epoch,
            augmenter=augmenter,
            mean=mean,
            std=std,
            device=torch.device("cpu"),
        )
    assert result.images == 256 and result.seconds > 0 and result.throughput > 0
    after, labels, probabilities = evaluate(model, validation, image_size=(50, 50), **kwargs)
    assert set(after) == {"loss", "accuracy", "auc", "bac", "f1"}
    assert labels.tolist() == validation.labels.tolist() and probabilities.shape == (64, 2)
    assert after["bac"] > 0.9 and after["loss"] < before["loss"]


def test_training_stops_between_batches_when_asked() -> None:
    train = _channel(64)
    model = SmallCNN()
    calls = []
    result = train_one_epoch(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        torch.nn.CrossEntropyLoss(),
        BatchLoader(train, 16, shuffle=True),
        0,
        augmenter=BatchAugmenter("none", (50, 50)),
        mean=torch.tensor(train.mean),
        std=torch.tensor(train.std),
        device=torch.device("cpu"),
        should_stop=lambda: calls.append(1) or len(calls) >= 2,
    )
    assert result.stopped and result.images == 32


class _InputProbe(torch.nn.Module):
    """Records the mean of every input image; logits from a linear map of the channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.means: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.means.append(images.detach().mean(dim=(1, 2, 3)))
        return self.linear(images.mean(dim=(2, 3)))  # (B, 2)


def test_mixup_blends_images_and_their_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    # Black images are class 0 and white ones class 1, so each blend's mean pixel
    # says which image and which partner it was made of.
    images = np.zeros((32, 50, 50, 3), np.uint8)
    images[16:] = 255
    train = ChannelData.from_arrays(images, np.r_[np.zeros(16), np.ones(16)].astype(np.int64))
    share = 0.3
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self: torch.tensor(share))
    torch.manual_seed(3)
    probe = _InputProbe()
    result = train_one_epoch(
        probe,
        torch.optim.SGD(probe.parameters(), lr=0.0),  # the weights stay as they are
        torch.nn.CrossEntropyLoss(),
        BatchLoader(train, 32, shuffle=True),
        0,
        augmenter=BatchAugmenter("none", (50, 50)),
        mean=torch.zeros(3),
        std=torch.ones(3) / 255,  # inputs are the raw pixel values
        device=torch.device("cpu"),
        mixup_alpha=0.4,
    )
    means = torch.cat(probe.means)
    # mean pixel → (own label, partner's label): λ·own + (1 − λ)·partner.
    pairs = {0.0: (0, 0), 255.0: (1, 1), 255 * share: (1, 0), 255 * (1 - share): (0, 1)}
    found = [min(pairs, key=lambda known: abs(known - value)) for value in means.tolist()]
    assert all(abs(f - v) < 1e-3 for f, v in zip(found, means.tolist(), strict=True))
    assert {255 * share, 255 * (1 - share)} & set(found)  # some pairs were mixed
    own = torch.tensor([pairs[f][0] for f in found])
    partner = torch.tensor([pairs[f][1] for f in found])
    with torch.no_grad():
        logits = probe.linear(means[:, None].repeat(1, 3))
        ce = torch.nn.functional.cross_entropy
        expected = share * ce(logits, own) + (1 - share) * ce(logits, partner)
    assert result.loss == pytest.approx(float(expected), rel=1e-5)


class _LayoutProbe(torch.nn.Module):
    """Records whether each input batch is channels_last; returns constant-ish logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.layouts: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.layouts.append(images.is_contiguous(memory_format=torch.channels_last))
        return self.linear(images.mean(dim=(2, 3)))  # (B, 2)


def test_cpu_training_and_evaluation_feed_channels_last_batches() -> None:
    train = _channel(48)
    probe = _LayoutProbe()
    mean, std, cpu = torch.tensor(train.mean), torch.tensor(train.std), torch.device("cpu")
    for augmentation in ("none", "crop_color_transform"):
        train_one_epoch(
            probe,
            torch.optim.SGD(probe.parameters(), lr=0.01),
            torch.nn.CrossEntropyLoss(),
            BatchLoader(train, 16, shuffle=True),
            0,
            augmenter=BatchAugmenter(augmentation, (50, 50), torch.Generator().manual_seed(0)),
            mean=mean,
            std=std,
            device=cpu,
        )
    evaluate(probe, train, batch_size=32, mean=mean, std=std, device=cpu, image_size=(50, 50))
    assert len(probe.layouts) == 3 + 3 + 2 and all(probe.layouts)


def _state(epoch: int) -> dict:
    return {
        "algorithm": "cnn",
        "hyperparameters": {"epochs": 5},
        "epoch": epoch,
        "model": {"w": torch.full((2,), float(epoch))},
        "optimizer": {},
    }


def test_checkpoints_keep_the_newest_two_and_load_safely(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, _state(epoch))
    names = [path.name for path in list_checkpoints(tmp_path)]
    assert names == ["checkpoint-epoch0002.pt", "checkpoint-epoch0003.pt"]
    assert not list(tmp_path.glob(".*tmp*"))
    newest = latest_checkpoint(tmp_path)
    assert newest is not None and load_checkpoint(newest)["model"]["w"].tolist() == [3.0, 3.0]
    assert latest_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00garbage", "corrupt or unreadable"),
        (None, "not a bcd training checkpoint"),
    ],
    ids=["garbage", "foreign-dict"],
)
def test_bad_checkpoints_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "checkpoint-epoch0001.pt"
    if content is None:
        torch.save({"weights": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidInputError) as error:
        load_checkpoint(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_checkpoints_refuse_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-epoch0001.pt"
    torch.save({**_state(1), "extra": Path("/etc")}, path)
    with pytest.raises(InvalidInputError, match="corrupt or unreadable"):
        load_checkpoint(path)
