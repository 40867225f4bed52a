"""Choose the slide context's radius on the validation split alone.

For each radius R the slide context (:mod:`bcd.neighbourhood`) is fitted and
scored by patient-grouped cross-validation *within* the validation split: the
validation patients are dealt into ``--folds`` groups, the context is fitted
on all groups but one and scored on the one left out, over ``--repeats``
shuffles. The radius with the lowest cross-validated log loss is the choice
(AUC is printed beside it). The test split is never read.

    bcd data import ../shared/data/IDC_regular_ps50_idx5 --name idc
    python examples/analysis/context_radius.py bcd/bundled --dataset idc
    bcd evaluate bcd/bundled --dataset idc --calibrate --context-radius R --out reports/ctx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bcd.config import get_settings
from bcd.evaluation import dataset_patches, fit_logistic, point_metrics, probabilities_from_margins
from bcd.evaluation._inference import RuntimeScorer
from bcd.neighbourhood import MAX_RADIUS, patch_features, sigmoid


def cross_validated(
    features: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray,
    folds: int,
    repeats: int,
) -> tuple[float, float]:
    """Mean held-out (log loss, AUC) of the context fitted on the other folds."""
    unique = np.unique(patients)
    losses, aucs = [], []
    for repeat in range(repeats):
        order = np.random.default_rng(repeat).permutation(unique)
        fold_of = {patient: index % folds for index, patient in enumerate(order)}
        fold = np.array([fold_of[patient] for patient in patients])
        held_out = np.empty(labels.size)
        for k in range(folds):
            weights, bias = fit_logistic(features[fold != k], labels[fold != k])
            held_out[fold == k] = sigmoid(features[fold == k] @ weights + bias)
        found = point_metrics(labels, held_out, 0.5)
        losses.append(found["log_loss"])
        aucs.append(found["roc_auc"])
    return float(np.mean(losses)), float(np.mean(aucs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="model folder (model.json + ONNX)")
    parser.add_argument("--dataset", default="idc")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    patches = dataset_patches(args.dataset, args.split, get_settings())
    labels = patches.labels.astype(np.int64)
    scorer = RuntimeScorer(args.model)
    try:
        margins = scorer.margins(patches.images, tta=False)
        probabilities = probabilities_from_margins(margins, scorer.temperature, scorer.logit_bias)
    finally:
        scorer.close()
    features = patch_features(
        probabilities, patches.patient_ids, patches.xs, patches.ys, MAX_RADIUS
    )
    print(
        f"{args.split}: {labels.size} patches, {np.unique(patches.patient_ids).size} patients; "
        f"{args.folds}-fold patient cross-validation, {args.repeats} shuffles"
    )
    results = {}
    for radius in range(MAX_RADIUS + 1):
        loss, auc = cross_validated(
            features[:, : radius + 1], labels, patches.patient_ids, args.folds, args.repeats
        )
        results[radius] = loss
        print(f"radius {radius}: held-out log loss {loss:.4f}  AUC {auc:.4f}")
    best = min(results, key=lambda radius: results[radius])
    print(f"lowest held-out log loss: radius {best}")


if __name__ == "__main__":
    main()
