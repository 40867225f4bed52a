"""A script-mode training script that uses only the SageMaker contract (no torch)."""

import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--learning-rate", type=float, default=0.1)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()

checkpoint = os.path.join(os.environ["BCD_CHECKPOINT_DIR"], "epoch.txt")
start = 0
if os.path.exists(checkpoint):
    with open(checkpoint) as handle:
        start = int(handle.read())
    print(f"resuming after epoch {start}")

train_files = sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
print(f"training on {len(train_files)} files")
for epoch in range(start + 1, start + args.epochs + 1):
    loss = 1.0 / (epoch * (1 + args.learning_rate))
    print(f"epoch={epoch} train:loss={loss:.4f} validation:accuracy={0.5 + 0.1 * epoch:.3f}")
    with open(checkpoint, "w") as handle:
        handle.write(str(epoch))
    time.sleep(args.sleep)

with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as handle:
    handle.write(f"trained {args.epochs} epochs")
contract = {
    key: value for key, value in os.environ.items() if key.startswith(("SM_", "BCD_", "MASTER_"))
}
contract["cwd"] = os.getcwd()
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "env.json"), "w") as handle:
    json.dump(contract, handle)
