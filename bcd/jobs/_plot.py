"""Training curves of a job as a PNG (matplotlib, imported when called)."""

from __future__ import annotations

from pathlib import Path

from bcd.config import Settings
from bcd.errors import InvalidInputError
from bcd.jobs import _store

# Panels: the metrics drawn together on one axis (same unit).
_PANELS = (
    ("loss", ("train:loss", "validation:loss")),
    ("accuracy", ("train:accuracy", "validation:accuracy")),
    ("validation", ("validation:auc", "validation:bac", "validation:f1")),
    ("throughput (images/s)", ("train:throughput",)),
    ("epoch time (s)", ("train:epoch_seconds",)),
)


def plot_training_curves(name: str, out: Path, settings: Settings) -> Path:
    """Draw a job's loss, accuracy and validation AUC/BAC/F1 per epoch into ``out``.

    Metrics that are not among the built-in names get a panel of their own,
    so script-mode jobs with their own metric definitions plot too.

    Args:
        name: The job.
        out: The PNG to write (its folder is created).
        settings: Where the metadata store is.

    Returns:
        ``out``.

    Raises:
        NotFoundError: No such job.
        InvalidInputError: The job has recorded no algorithm metrics yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    record = _store.get_job(name, settings)
    names = _store.metric_names(name, settings, source="algorithm")
    if not names:
        raise InvalidInputError(
            f"training job {name!r} ({record.status}) has recorded no metrics to plot yet"
        )
    known = {metric for _, metrics in _PANELS for metric in metrics}
    panels = [(title, [m for m in metrics if m in names]) for title, metrics in _PANELS]
    panels = [(title, metrics) for title, metrics in panels if metrics]
    others = [metric for metric in names if metric not in known]
    if others:
        panels.append(("other metrics", others))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, (title, metrics) in zip(axes.flat, panels, strict=False):
        for metric in metrics:
            series = _store.metric_series(name, metric, settings)
            with_epochs = all(point.epoch is not None for point in series)
            xs = [point.epoch if with_epochs else point.step for point in series]
            axis.plot(xs, [point.value for point in series], marker="o", markersize=3, label=metric)
            axis.set_xlabel("epoch" if with_epochs else "step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"{name} ({record.algorithm}, {record.status})")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
