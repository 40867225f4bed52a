"""A script-mode job printing many long metric names (no torch), for CLI table tests."""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

for epoch in range(1, args.epochs + 1):
    values = " ".join(
        f"{name}={value:.4f}"
        for name, value in (
            ("train:loss", 1.0 / epoch),
            ("train:accuracy", 0.6 + 0.05 * epoch),
            ("validation:loss", 1.2 / epoch),
            ("validation:accuracy", 0.55 + 0.05 * epoch),
            ("validation:balanced_accuracy", 0.5 + 0.05 * epoch),
            ("validation:auc", 0.7 + 0.02 * epoch),
            ("train:epoch_seconds", 1.5),
        )
    )
    print(f"epoch={epoch} {values}", flush=True)
    time.sleep(0.4)  # long enough for instance metric samples

with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as handle:
    handle.write("done")
