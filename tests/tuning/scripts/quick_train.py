"""A tiny script-mode training script for tuning tests (seconds per trial, no data).

Its ``score`` rises epoch by epoch towards a quality that peaks at
``learning_rate = 0.01`` and is a little higher with ``adam``; it prints
``epoch=<e> score=<value>`` lines for the job's metric definitions.
"""

import argparse
import json
import math
import os
import signal
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--mini_batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch_seconds", type=float, default=0.1)
    parser.add_argument("--fail_when_optimizer", default="")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.optimizer == args.fail_when_optimizer:
        sys.exit(f"refusing optimizer {args.optimizer}")
    quality = 1.0 - (math.log10(args.learning_rate) + 2.0) ** 2 / 10.0
    quality += 0.05 if args.optimizer == "adam" else 0.0
    quality -= abs(args.mini_batch_size - 32) / 1000.0
    score = 0.0
    for epoch in range(1, args.epochs + 1):
        time.sleep(args.epoch_seconds)
        score = quality * (1.0 - 0.5**epoch)
        print(f"epoch={epoch} score={score:.6f}", flush=True)
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as out:
        json.dump({"score": score}, out)


if __name__ == "__main__":
    main()
