"""The learner of examples/rl-job.yaml: waits for every actor's rollouts over TCP (it listens on
MASTER_PORT; the actors find it at MASTER_ADDR), averages them into a policy and writes it to its output
channel. VC_ACTOR_NUM says how many actors the job has (docs/HETEROGENEOUS.md)."""

import argparse
import json
import os
import socket

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.5)
parser.add_argument("--train_url", required=True)
args = parser.parse_args()

actors = int(os.environ["VC_ACTOR_NUM"])
print(f"learner: waiting for {actors} actor(s) on port {os.environ['MASTER_PORT']}", flush=True)
server = socket.create_server(("", int(os.environ["MASTER_PORT"])))
server.settimeout(300)
weights = [0.0, 0.0]
for _ in range(actors):
    conn, _ = server.accept()
    with conn, conn.makefile("r") as f:
        rollout = json.loads(f.readline())
    print(f"learner: {rollout['actor']} returned {rollout['return']:.3f}", flush=True)
    weights = [w + args.lr * g / actors for w, g in zip(weights, rollout["gradient"], strict=True)]
with open(os.path.join(args.train_url, "policy.json"), "w") as f:
    json.dump({"weights": weights, "actors": actors}, f)
print(f"learner: policy {weights} written", flush=True)
