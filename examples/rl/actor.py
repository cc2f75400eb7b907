"""An actor of examples/rl-job.yaml: plays a few episodes of a toy one-step environment, then sends its
return and gradient estimate to the learner (MASTER_ADDR:MASTER_PORT), retrying while it starts."""

import argparse
import json
import os
import random
import socket
import time

parser = argparse.ArgumentParser()
parser.add_argument("--episodes", type=int, default=100)
args = parser.parse_args()

me = f"{os.environ['MA_TASK_NAME']}-{os.environ['VC_TASK_INDEX']}"
rng = random.Random(int(os.environ["VC_TASK_INDEX"]))
target = (0.3, -0.7)
gradient, total = [0.0, 0.0], 0.0
for _ in range(args.episodes):
    action = (rng.gauss(0, 1), rng.gauss(0, 1))
    reward = -sum((a - t) ** 2 for a, t in zip(action, target, strict=True))
    total += reward
    gradient = [g + reward * a / args.episodes for g, a in zip(gradient, action, strict=True)]
print(f"{me}: {args.episodes} episodes, mean return {total / args.episodes:.3f}", flush=True)

deadline = time.time() + 120
while True:
    try:
        conn = socket.create_connection((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])), timeout=5)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
with conn:
    conn.sendall((json.dumps({"actor": me, "return": total / args.episodes, "gradient": gradient}) + "\n").encode())
print(f"{me}: sent to the learner", flush=True)
