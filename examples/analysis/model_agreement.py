"""Where do the models' errors come from? Agreement, ensembles and slide context.

Scores two or more model folders on one split of an imported dataset and
prints, per model and for the average of their margins:

- ROC AUC, and balanced accuracy at each model's own decision threshold;
- the best balanced accuracy over *all* thresholds on this same split — an
  upper bound no threshold chosen elsewhere can beat, not a result;
- how many of one model's errors the other model makes too;
- the same AUC and upper-bound BAC after averaging each patch's calibrated
  logit with its neighbours on the patient's slide grid (``--context`` patches
  each way), i.e. what a plain average of slide context adds to a patch
  classifier (``bcd evaluate --context-radius`` fits the weighted combination
  that whole-slide analysis uses).

Nothing is written; nothing here chooses a model. Run it on the validation
split to decide, and read the test split only to describe::

    bcd data import ../shared/data/IDC_regular_ps50_idx5 --name idc
    python examples/analysis/model_agreement.py bcd/bundled OTHER_MODEL_DIR \\
        --dataset idc --split validation
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bcd.config import get_settings
from bcd.evaluation import (
    bac_optimal_threshold,
    dataset_patches,
    point_metrics,
    probabilities_from_margins,
)
from bcd.evaluation._inference import RuntimeScorer
from bcd.neighbourhood import patch_features


def best_bac(labels: np.ndarray, scores: np.ndarray) -> float:
    """The highest balanced accuracy over every threshold on these scores."""
    return bac_optimal_threshold(labels, scores)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders (model.json + ONNX)")
    parser.add_argument("--dataset", default="idc")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--context", type=int, default=2, help="neighbourhood radius in patches")
    args = parser.parse_args()

    patches = dataset_patches(args.dataset, args.split, get_settings())
    labels = patches.labels.astype(np.int64)
    print(f"{args.split}: {labels.size} patches, {len(np.unique(patches.patient_ids))} patients")

    margins: dict[str, np.ndarray] = {}
    probabilities: dict[str, np.ndarray] = {}
    wrong: dict[str, np.ndarray] = {}
    for folder in args.models:
        scorer = RuntimeScorer(folder)
        margin = scorer.margins(patches.images, tta=False)[0]
        probability = probabilities_from_margins(
            margin[None], scorer.temperature, scorer.logit_bias
        )
        found = point_metrics(labels, probability, scorer.decision_threshold)
        name = str(folder)
        margins[name] = margin
        probabilities[name] = probability
        wrong[name] = (probability >= scorer.decision_threshold) != (labels == 1)
        print(
            f"{name}: AUC {found['roc_auc']:.4f}  BAC {found['balanced_accuracy']:.4f} "
            f"(threshold {scorer.decision_threshold:.3f})  "
            f"best BAC on this split {best_bac(labels, margin):.4f}"
        )

    names = list(margins)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            shared = (wrong[first] & wrong[second]).sum()
            print(
                f"errors shared: {shared} of {wrong[first].sum()} ({first}) and "
                f"{wrong[second].sum()} ({second})"
            )
    if len(names) > 1:
        mean = np.mean([margins[name] for name in names], axis=0)
        auc = point_metrics(labels, 1 / (1 + np.exp(-mean)), 0.5)["roc_auc"]
        print(f"mean of margins: AUC {auc:.4f}  best BAC {best_bac(labels, mean):.4f}")

    for name in names:
        # Column r: the mean calibrated logit over the (2r + 1)² window, r = 1…context.
        features = patch_features(
            probabilities[name], patches.patient_ids, patches.xs, patches.ys, args.context
        )
        for radius in range(1, args.context + 1):
            smoothed = features[:, radius]
            auc = point_metrics(labels, 1 / (1 + np.exp(-smoothed)), 0.5)["roc_auc"]
            print(
                f"{name} + slide context r={radius}: AUC {auc:.4f}  "
                f"best BAC {best_bac(labels, smoothed):.4f}"
            )


if __name__ == "__main__":
    main()
