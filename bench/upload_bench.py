"""What periodic output upload costs a job that writes continuously (issue 12): target <= 5%.

    .venv/bin/python bench/upload_bench.py [--steps 20] [--mb 16] [--period 5s] [--pairs 3] [--backend s3]

A real server (embedded executor, sandbox as on this machine) with its outputs on an S3-compatible
server on 127.0.0.1 (SeaweedFS, tests/s3_support.py), or on the local store. The job does STEPS steps of
fixed work, each about a second of CPU (sha256 over an MB-sized buffer) and then a new MB-MB checkpoint
file in its output channel, and prints how long the steps took. Two arms, alternated PAIRS times:
- `upload_on_exit`: outputs go up once, when the job ends (no upload while it runs);
- `upload_periodically` every PERIOD: what changed goes up in the background while the job runs.
The overhead is the median job time with periodic upload over the median without, less one; it is the
job's own clock, so the final upload (after the job's work) is not in it. Each periodic job's bucket is
checked to hold every checkpoint at the end. Results: bench/results/upload.json, docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import obstore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONFIG, TINY_FLAVOR, BenchServer, result_line, table, verdict, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import s3_support
from openarts.storage.s3 import S3ObjectStore, S3Options

JOB = """
import hashlib, os, sys, time
out = sys.argv[1].split("=", 1)[1]
steps, mb = int(os.environ["STEPS"]), int(os.environ["MB"])
buf = os.urandom(mb << 20)
rounds = 1
t = time.perf_counter()  # calibrate: about one second of hashing per step
while time.perf_counter() - t < 0.2:
    hashlib.sha256(buf).digest()
    rounds += 1
rounds = max(1, int(rounds * 5))
began = time.perf_counter()
for step in range(steps):
    for _ in range(rounds):
        hashlib.sha256(buf).digest()
    with open(os.path.join(out, f"ckpt-{step:04d}.bin"), "wb") as fh:
        fh.write(buf)
print(f"elapsed {time.perf_counter() - began:.3f} rounds {rounds}", flush=True)
"""


def run_job(server: BenchServer, client: httpx.Client, name: str, mode: str, period: str, url: str,
            steps: int, mb: int) -> float:
    body: dict[str, Any] = {
        "kind": "job",
        "metadata": {"name": name, "description": "upload benchmark"},
        "algorithm": {"command": "python3 -c \"$JOB\" \"$@\"; :",
                      "environments": {"JOB": JOB, "STEPS": str(steps), "MB": str(mb)},
                      "outputs": [{"name": "train_url", "remote": {"obs": {"obs_url": url}}, "mode": mode,
                                   "period": period}]},
        "spec": {"resource": {"flavor_id": TINY_FLAVOR, "node_count": 1}},
    }
    r = client.post(f"{server.api}/training-jobs", json=body)
    r.raise_for_status()
    job_id = r.json()["metadata"]["id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = client.get(f"{server.api}/training-jobs/{job_id}").json()["status"]
        if status["phase"] in ("Completed", "Failed", "Abnormal", "Terminated"):
            break
        time.sleep(0.5)
    log = client.get(f"{server.api}/training-jobs/{job_id}/tasks/worker-0/logs/preview").json()["content"]
    m = re.search(r"elapsed ([0-9.]+)", log)
    if status["phase"] != "Completed" or m is None:
        raise RuntimeError(f"job {name} ended {status['phase']}: {log[-2000:]}")
    return float(m.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--mb", type=int, default=16)
    p.add_argument("--period", default="5s")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--backend", choices=("s3", "local"), default="s3")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="openarts-upload-bench-"))
    s3 = None
    config = CONFIG
    if args.backend == "s3":
        s3 = s3_support.start_s3(work / "s3")
        s3.create_bucket("bkt")
        config += s3.config(s3_support.SECRET_KEY)
    times: dict[str, list[float]] = {"upload_on_exit": [], "upload_periodically": []}
    server = BenchServer(work / "data", "upload", config=config).start()
    try:
        with httpx.Client(timeout=60) as client:
            run_job(server, client, "warm-up", "upload_on_exit", args.period, "obs://bkt/warm/", 2, args.mb)
            for i in range(args.pairs):
                for mode in ("upload_on_exit", "upload_periodically") if i % 2 == 0 else \
                        ("upload_periodically", "upload_on_exit"):
                    t = run_job(server, client, f"{mode}-{i}", mode, args.period, f"obs://bkt/{mode}-{i}/",
                                args.steps, args.mb)
                    times[mode].append(t)
                    print(f"  {mode:20} pair {i}: {t:.2f} s", flush=True)
        if s3 is not None:  # every checkpoint of a periodic job is in the bucket
            raw = S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=s3_support.ACCESS_KEY,
                                          secret_access_key=s3_support.SECRET_KEY))._store("bkt")
            got = sum(len(c) for c in obstore.list(raw, prefix="upload_periodically-0/"))
            assert got == args.steps, f"{got} checkpoints in the bucket of {args.steps}"
    finally:
        server.stop()
        if s3 is not None:
            s3.stop()
    base = statistics.median(times["upload_on_exit"])
    periodic = statistics.median(times["upload_periodically"])
    overhead = periodic / base - 1
    results = {"params": vars(args), "runs_s": times, "median_on_exit_s": base, "median_periodic_s": periodic,
               "overhead": overhead}
    print(table(["arm", "runs (s)", "median (s)"],
                [[k, " ".join(f"{t:.2f}" for t in v), f"{statistics.median(v):.2f}"] for k, v in times.items()]))
    write_result("upload", results)
    result_line("upload", f"periodic upload every {args.period} ({args.backend}): {overhead:+.1%} job time "
                f"(target <= 5%): {verdict(overhead <= 0.05)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
