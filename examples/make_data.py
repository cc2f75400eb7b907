"""Writes a small two-class data set (two Gaussian blobs) as CSV to stdout; deterministic."""

import random
import sys

random.seed(42)
out = sys.stdout
out.write("x1,x2,label\n")
for i in range(1000):
    label = i % 2
    cx, cy = (1.5, 1.0) if label else (-1.0, -1.5)
    out.write(f"{random.gauss(cx, 1.0):.4f},{random.gauss(cy, 1.0):.4f},{label}\n")
