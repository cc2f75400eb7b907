"""A small, real training program in the ModelArts style: logistic regression by gradient descent.

It reads a CSV data set (x1,x2,label) from its input channel, trains for --epochs epochs printing
loss and accuracy, and writes the model to its output channel. Pure Python: no dependencies.

    python train.py --data_url=DIR --train_url=DIR [--epochs=20] [--lr=0.5]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
from pathlib import Path


def load(data_dir: Path) -> list[tuple[float, float, int]]:
    rows = []
    for path in sorted(data_dir.rglob("*.csv")):
        with path.open() as fh:
            for rec in csv.DictReader(fh):
                rows.append((float(rec["x1"]), float(rec["x2"]), int(rec["label"])))
    if not rows:
        raise SystemExit(f"no *.csv data found in {data_dir}")
    return rows


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_url", required=True)
    parser.add_argument("--train_url", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.5)
    args, _unknown = parser.parse_known_args()

    data = load(Path(args.data_url))
    random.seed(0)
    split = int(len(data) * 0.8)
    random.shuffle(data)
    train, test = data[:split], data[split:]
    print(f"worker {os.environ.get('VC_TASK_INDEX', '0')}/{os.environ.get('VC_WORKER_NUM', '1')}: "
          f"{len(train)} training and {len(test)} test samples from {args.data_url}")

    w1 = w2 = b = 0.0
    for epoch in range(1, args.epochs + 1):
        g1 = g2 = gb = loss = 0.0
        for x1, x2, y in train:
            p = sigmoid(w1 * x1 + w2 * x2 + b)
            loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
            g1 += (p - y) * x1
            g2 += (p - y) * x2
            gb += p - y
        n = len(train)
        w1, w2, b = w1 - args.lr * g1 / n, w2 - args.lr * g2 / n, b - args.lr * gb / n
        acc = sum((sigmoid(w1 * x1 + w2 * x2 + b) > 0.5) == bool(y) for x1, x2, y in test) / len(test)
        print(f"epoch {epoch:3d}  loss {loss / n:.4f}  test accuracy {acc:.3f}", flush=True)

    out = Path(args.train_url)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps({"w1": w1, "w2": w2, "b": b, "test_accuracy": acc}))
    print(f"model written to {out / 'model.json'}")


if __name__ == "__main__":
    main()
