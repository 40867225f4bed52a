"""Trains until stopped; on SIGTERM saves a checkpoint and exits (the contract)."""

import argparse
import os
import signal
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--ignore-sigterm", type=int, default=0)
parser.add_argument("--fail-rank", type=int, default=-1)
args = parser.parse_args()
if int(os.environ.get("RANK", "0")) == args.fail_rank:
    sys.exit(f"rank {args.fail_rank} cannot reach its peers")
checkpoint = os.path.join(os.environ["BCD_CHECKPOINT_DIR"], "epoch.txt")
state = {"epoch": 0}


def save_and_exit(signum, frame):
    with open(checkpoint, "w") as handle:
        handle.write(str(state["epoch"]))
    print("saved checkpoint on SIGTERM", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else save_and_exit)
while True:
    state["epoch"] += 1
    print(f"epoch={state['epoch']} train:loss={1.0 / state['epoch']:.4f}", flush=True)
    time.sleep(0.2)
