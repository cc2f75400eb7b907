"""Heterogeneous jobs (issue 15): what a job of roles costs against a plain job of as many workers.

    .venv/bin/python bench/hetero_bench.py [--reps 10]

Both jobs run 3 tasks of the same rendezvous program: task 0 listens on MASTER_PORT and waits for the
other two to connect (RANK and WORLD_SIZE count every task of the job, whatever its role). The plain job
is one role of 3 workers; the heterogeneous one is a learner (1 task) and actors (2 tasks), each role
with its own command and directory tree, all of the same flavor. Measured per job, alternating:
create to start (the server's create_time to start_time: queueing, staging each role, spawning) and
create to Completed as the client sees it (polling every 20 ms).
Results: bench/results/hetero.json, docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_FLAVOR, run_to_completed, running_server, summary, table, write_result

PROGRAM = """\
import os, socket, time
port, n = int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"])
if os.environ["RANK"] == "0":
    server = socket.create_server(("", port))
    server.settimeout(60)
    for _ in range(n - 1):
        conn, _ = server.accept()
        conn.recv(8)
        conn.close()
else:
    deadline = time.time() + 60
    while True:
        try:
            conn = socket.create_connection((os.environ["MASTER_ADDR"], port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)
    conn.sendall(os.environ["MA_TASK_NAME"].encode())
    conn.close()
"""
COMMAND = f"python3 -c {shlex.quote(PROGRAM)}"


def plain(name: str) -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": name}, "algorithm": {"command": COMMAND},
            "spec": {"resource": {"flavor_id": TINY_FLAVOR, "node_count": 3}}}


def roles(name: str) -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": name}, "tasks": [
        {"role": "learner", "algorithm": {"command": COMMAND},
         "task_resource": {"flavor_id": TINY_FLAVOR, "node_count": 1}},
        {"role": "actor", "algorithm": {"command": COMMAND},
         "task_resource": {"flavor_id": TINY_FLAVOR, "node_count": 2}}]}


def run(client: httpx.Client, api: str, body: dict[str, Any]) -> tuple[float, float]:
    doc, wall = run_to_completed(client, api, body)
    assert len(doc["status"]["tasks"]) == 3
    return doc["status"]["start_time"] - doc["metadata"]["create_time"], wall * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    times: dict[str, dict[str, list[float]]] = {k: {"to_start": [], "to_completed": []} for k in ("plain", "roles")}
    with running_server("hetero") as server, httpx.Client(timeout=30) as client:
        run(client, server.api, plain("warm-up"))
        for i in range(args.reps):
            for kind, make in (("plain", plain), ("roles", roles)):
                start, wall = run(client, server.api, make(f"{kind}-{i}"))
                times[kind]["to_start"].append(start)
                times[kind]["to_completed"].append(wall)
    results = {"reps": args.reps, **{k: {m: summary(v) for m, v in t.items()} for k, t in times.items()}}
    rows = [[label, f"{results[k]['to_start']['p50']:.0f} / {results[k]['to_start']['p90']:.0f}",
             f"{results[k]['to_completed']['p50']:.0f} / {results[k]['to_completed']['p90']:.0f}"]
            for k, label in (("plain", "plain job, 3 workers"), ("roles", "learner 1 + actors 2"))]
    print(table(["job (3 tasks, TCP rendezvous)", "create to start ms p50 / p90", "create to Completed ms p50 / p90"],
                rows))
    print("written", write_result("hetero", results))


if __name__ == "__main__":
    main()
