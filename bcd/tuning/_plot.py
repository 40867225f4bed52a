"""The progress plot of a tuning job: objective per trial and the best so far."""

from __future__ import annotations

import os
from pathlib import Path

from bcd.config import Settings, get_settings
from bcd.errors import InvalidInputError
from bcd.tuning import _store


def plot_tuning_job(name: str, out: Path, settings: Settings | None = None) -> Path:
    """Draw each trial's objective value and the best-so-far curve into a PNG.

    Completed trials are dots, pruned ones crosses (their last value), and the
    step line is the best completed value after each trial.

    Args:
        name: The tuning job.
        out: The PNG to write (written aside, then renamed into place).
        settings: Where the metadata store is.

    Returns:
        ``out``.

    Raises:
        NotFoundError: No such tuning job.
        InvalidInputError: No trial has an objective value yet, or ``out`` is not a .png.
    """
    settings = settings or get_settings()
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"--out {str(out)!r} must name a .png file")
    record = _store.get_job(name, settings)
    rows = [row for row in _store.trials(name, settings) if row.objective_value is not None]
    if not rows:
        raise InvalidInputError(
            f"tuning job {name!r} has no trial with a value of {record.objective_metric!r} yet"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    maximize = record.objective_type == "Maximize"
    completed = [row for row in rows if row.status == "Completed"]
    pruned = [row for row in rows if row.pruned]
    best_slots, best_values = [], []
    best: float | None = None
    for row in completed:
        value = float(row.objective_value or 0.0)
        if best is None or (value > best if maximize else value < best):
            best = value
        best_slots.append(row.slot)
        best_values.append(best)

    figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
    axes.scatter(
        [row.slot for row in completed],
        [float(row.objective_value or 0.0) for row in completed],
        label="completed trial",
        color="tab:blue",
        zorder=3,
    )
    if pruned:
        axes.scatter(
            [row.slot for row in pruned],
            [float(row.objective_value or 0.0) for row in pruned],
            label="pruned trial (last value)",
            marker="x",
            color="tab:gray",
            zorder=3,
        )
    if best_slots:
        axes.step(best_slots, best_values, where="post", label="best so far", color="tab:orange")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(f"{record.objective_metric} ({record.objective_type.lower()})")
    axes.set_title(f"tuning job {name} ({record.strategy}, {record.status})")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    figure.savefig(partial, format="png")
    plt.close(figure)
    os.replace(partial, out)
    return out
