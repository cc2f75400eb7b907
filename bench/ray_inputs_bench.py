"""A dataset on a Ray node: the first job fetches it, later jobs take it from the node's cache (issue 12).

    .venv/bin/python bench/ray_inputs_bench.py [--mb 1024] [--jobs 3]

A `ray.cluster_utils.Cluster` (a head without CPUs, one node of 2 CPUs), an S3-compatible server on
127.0.0.1 (SeaweedFS, tests/s3_support.py) holding one MB-MB object, and `openarts serve --executor ray`
with its storage on that server. JOBS jobs in a row, each with the object's prefix as its input channel
and `true` as its command; per job: the staging time the server reports ("Staged in X s.", the server's
fetch into its cache and the node's preparation), submit -> Running, and what the node took (its
"Inputs on node" event). The first job fetches the object twice (S3 -> server cache -> node cache);
every later one should cross nothing. Run it again with OPENARTS_BENCH_SRC pointing at an older src/ to
compare (before the nodes' caches, inputs travelled inside each attempt's tar).
Results: bench/results/ray_inputs.json, docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import obstore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, result_line, table, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import s3_support
from openarts.storage.s3 import S3ObjectStore, S3Options

FLAVOR = "bench.ray.tiny"


def config(address: str, node_dir: Path, s3: s3_support.S3Server) -> str:
    return f"""
[server]
executor = "ray"
ray_address = "{address}"
ray_node_dir = "{node_dir}"
reconcile_interval_seconds = 0.2

[[flavors]]
flavor_id = "{FLAVOR}"
cpu_cores = 0.1
memory_gb = 0.1
""" + s3.config(s3_support.SECRET_KEY)


def run_job(server: BenchServer, client: httpx.Client, name: str) -> dict[str, Any]:
    body = {"kind": "job", "metadata": {"name": name},
            "algorithm": {"command": "true; :",
                          "inputs": [{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/big/"}}}]},
            "spec": {"resource": {"flavor_id": FLAVOR, "node_count": 1}}}
    began = time.monotonic()
    r = client.post(f"{server.api}/training-jobs", json=body)
    r.raise_for_status()
    job_id = r.json()["metadata"]["id"]
    running = None
    deadline = began + 600
    while time.monotonic() < deadline:
        phase = client.get(f"{server.api}/training-jobs/{job_id}").json()["status"]["phase"]
        if running is None and phase in ("Running", "Completed"):
            running = time.monotonic() - began
        if phase in ("Completed", "Failed", "Abnormal", "Terminated"):
            break
        time.sleep(0.05)
    events = [e["message"] for e in client.get(f"{server.api}/training-jobs/{job_id}/events").json()["events"]]
    if phase != "Completed":
        raise RuntimeError(f"job {name} ended {phase}: {events}")
    staged = next((float(m.group(1)) for e in events if (m := re.fullmatch(r"Staged in ([0-9.]+) s\.", e))), None)
    node = next((e.split(": ", 1)[1] for e in events if e.startswith("Inputs on node ")), "(no node cache)")
    server_line = next((e for e in events if e.startswith("Input data_url")), "")
    return {"staged_s": staged, "to_running_s": running, "node": node, "server": server_line}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=1024)
    p.add_argument("--jobs", type=int, default=3)
    args = p.parse_args()
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="openarts-ray-inputs-bench-"))
    s3 = s3_support.start_s3(work / "s3")
    s3.create_bucket("bkt")
    blob = work / "big.bin"
    with open(blob, "wb") as fh:
        for _ in range(args.mb):
            fh.write(bytes(range(256)) * 4096)
    store = S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=s3_support.ACCESS_KEY,
                                    secret_access_key=s3_support.SECRET_KEY))
    obstore.put(store._store("bkt"), "big/data.bin", blob)
    blob.unlink()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    server = BenchServer(work / "data", "ray-inputs", config=config(cluster.address, work / "nodes", s3)).start()
    runs = []
    try:
        with httpx.Client(timeout=60) as client:
            for i in range(args.jobs):
                runs.append(run_job(server, client, f"ray-inputs-{i}"))
                print(f"  job {i}: {runs[-1]}", flush=True)
    finally:
        server.stop()
        cluster.shutdown()
        s3.stop()
    print(table(["job", "staged (s)", "submit -> Running (s)", "the node took", "the server took"],
                [[i, r["staged_s"], r["to_running_s"], r["node"], r["server"].rsplit(" (", 1)[-1].rstrip(").")]
                 for i, r in enumerate(runs)]))
    write_result("ray_inputs", {"params": vars(args), "runs": runs})
    later = [r["staged_s"] for r in runs[1:] if r["staged_s"] is not None]
    result_line("ray_inputs", f"{args.mb} MB input on a Ray node: first staging {runs[0]['staged_s']} s, "
                f"later ones {later} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
