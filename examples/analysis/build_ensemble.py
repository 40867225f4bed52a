"""Combine trained model folders into one ensemble model folder (``bcd.algorithms.ensemble``).

Scores every member on the validation split of an imported dataset (to
standardise its margins), writes the ensemble's ``model.onnx``, ``model.json``
and ``model.pt``, and prints each member's and the ensemble's validation ROC
AUC. Calibrate the result like any model afterwards:

    BCD_HOME=... .venv/bin/python examples/analysis/build_ensemble.py \\
        bcd/bundled path/to/lite0-model --dataset idc --out ensemble/
    bcd evaluate ensemble/ --dataset idc --split validation --calibrate --out report/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels == 1
    count = int(positives.sum())
    other = len(labels) - count
    return float((ranks[positives].sum() - count * (count + 1) / 2) / (count * other))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path, help="model folders (2 or more)")
    parser.add_argument("--dataset", required=True, help="imported dataset with a validation split")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--names", nargs="*", help="member names for model.json")
    args = parser.parse_args()

    from bcd.algorithms.ensemble import write_ensemble
    from bcd.config import get_settings
    from bcd.evaluation._evaluate import dataset_patches
    from bcd.evaluation._inference import RuntimeScorer

    patches = dataset_patches(args.dataset, args.split, get_settings())
    images = np.asarray(patches.images)
    document = write_ensemble(args.members, args.out, images, names=args.names)
    for member in document["ensemble"]["members"]:
        name, centre, scale = member["name"], member["centre"], member["scale"]
        print(f"member {name}: centre {centre:.3f}, scale {scale:.3f}")
    results = {}
    for folder in [*args.members, args.out]:
        scorer = RuntimeScorer(Path(folder))
        try:
            margins = scorer.margins(images, tta=False)[0]
        finally:
            scorer.close()
        results[str(folder)] = auc(patches.labels, margins)
        print(f"{folder}: {args.split} ROC AUC {results[str(folder)]:.4f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
