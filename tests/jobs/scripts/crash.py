"""Fails half-way, as a buggy script does."""

import sys

print("epoch=1 train:loss=0.9")
sys.stdout.flush()
raise ValueError("the learning rate exploded at step 17")
