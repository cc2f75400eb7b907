"""openarts on Ray against Ray's own Jobs API, side by side on one local Ray cluster (issue 11).

    .venv/bin/python bench/ray_bench.py [--latency-jobs 15] [--seconds 20] [--clients 32] [--get-seconds 5]

One `ray.cluster_utils.Cluster` serves both arms: a head with the dashboard (Ray's Jobs API) and no CPUs,
and two nodes of 8 logical CPUs each. openarts runs `serve --executor ray` on it with a 0.1-CPU flavor;
Ray Jobs gets the same trivial entrypoint. Both are driven the same way, over HTTP with the same cheap
keep-alive client (common.RawConnection), polling a job's status every POLL seconds:

1. latency: one job at a time, `true`: submit -> Running and submit -> Completed (Ray: RUNNING, SUCCEEDED);
2. throughput: CLIENTS clients, each submitting a job and waiting for its end, again and again, for
   SECONDS seconds: jobs completed per second;
3. status reads: 16 keep-alive connections reading finished jobs' status for GET_SECONDS seconds
   (openarts: GET training-jobs/{id}; Ray: the dashboard's GET /api/jobs/{id}), from wrk where it is
   installed (Debian's wrk), else from the Python client.

Targets (issue 11): a trivial job completes in at most a third of Ray Jobs' time; at least 20x its jobs
per second; status reads at least 5x faster. Results: bench/results/ray.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BENCH_DIR,
    BenchServer,
    RawConnection,
    machine,
    provenance,
    result_line,
    summary,
    table,
    temp_data_dir,
    verdict,
    write_result,
)

POLL = 0.005
FLAVOR = "bench.ray.tiny"
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000}


def openarts_config(address: str, node_dir: Path) -> str:
    return f"""
[server]
executor = "ray"
ray_address = "{address}"
ray_node_dir = "{node_dir}"

[[flavors]]
flavor_id = "{FLAVOR}"
cpu_cores = 0.1
memory_gb = 0.1
"""


class Arm:
    """One system's HTTP surface: submit a trivial job, read its state (normalised), its status path."""

    name = ""
    RUNNING = ("Running",)
    DONE = ("Completed", "Failed", "Abnormal", "Terminated")

    def __init__(self, url: str) -> None:
        self.url = url

    async def submit(self, conn: RawConnection, i: int) -> str:
        raise NotImplementedError

    def status_path(self, job_id: str) -> str:
        raise NotImplementedError

    def state(self, payload: bytes) -> str:
        raise NotImplementedError

    async def wait(self, conn: RawConnection, job_id: str, t0: float) -> tuple[float | None, float]:
        """(seconds to running or None if never seen, seconds to done)."""
        running = None
        while True:
            status, payload = await conn.request("GET", self.status_path(job_id))
            state = self.state(payload) if status == 200 else ""
            if running is None and (state in self.RUNNING or state in self.DONE):
                running = time.perf_counter() - t0 if state in self.RUNNING else None
            if state in self.DONE:
                if state != self.DONE[0]:
                    raise RuntimeError(f"{self.name} job {job_id} ended {state}")
                return running, time.perf_counter() - t0
            await asyncio.sleep(POLL)


class OpenartsArm(Arm):
    name = "openarts on Ray"

    async def submit(self, conn: RawConnection, i: int) -> str:
        body = {"kind": "job", "metadata": {"name": f"b{i}-{random.getrandbits(40):x}"},
                "algorithm": {"command": "true"},
                "spec": {"resource": {"flavor_id": FLAVOR, "node_count": 1}}}
        status, payload = await conn.request("POST", "/training-jobs", body)
        if status != 201:
            raise RuntimeError(f"create: {status} {payload[:300]!r}")
        return str(orjson.loads(payload)["metadata"]["id"])

    def status_path(self, job_id: str) -> str:
        return f"/training-jobs/{job_id}"

    def state(self, payload: bytes) -> str:
        return str(orjson.loads(payload)["status"]["phase"])


class RayJobsArm(Arm):
    name = "Ray Jobs API"
    RUNNING = ("RUNNING",)
    DONE = ("SUCCEEDED", "FAILED", "STOPPED")

    async def submit(self, conn: RawConnection, i: int) -> str:
        status, payload = await conn.request("POST", "/api/jobs/", {"entrypoint": "true"})
        if status != 200:
            raise RuntimeError(f"submit: {status} {payload[:300]!r}")
        return str(orjson.loads(payload)["submission_id"])

    def status_path(self, job_id: str) -> str:
        return f"/api/jobs/{job_id}"

    def state(self, payload: bytes) -> str:
        return str(orjson.loads(payload)["status"])


async def latency(arm: Arm, n: int) -> dict[str, Any]:
    conn = RawConnection(arm.url)
    runs, dones = [], []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            job_id = await arm.submit(conn, i)
            running, done = await arm.wait(conn, job_id, t0)
            if running is not None:
                runs.append(running * 1000)
            dones.append(done * 1000)
    finally:
        await conn.close()
    return {"to_running_ms": summary(runs) if runs else None, "to_completed_ms": summary(dones),
            "running_seen": len(runs), "jobs": n}


async def throughput(arm: Arm, clients: int, seconds: float) -> dict[str, Any]:
    done: list[str] = []
    end = time.perf_counter() + seconds

    async def client(k: int) -> None:
        conn = RawConnection(arm.url)
        try:
            i = 0
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                job_id = await arm.submit(conn, k * 100_000 + i)
                await arm.wait(conn, job_id, t0)
                done.append(job_id)
                i += 1
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    return {"jobs": len(done), "wall_s": wall, "jobs_per_s": len(done) / wall, "clients": clients, "ids": done}


def status_reads_wrk(arm: Arm, ids: list[str], seconds: float, conns: int = 16) -> dict[str, Any]:
    """The same load from wrk (2 threads): a client that costs the machine far less than Python's."""
    parsed = httpx.URL(arm.url)
    prefix = parsed.raw_path.decode().rstrip("/")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(prefix + arm.status_path(i) for i in ids))
    try:
        done = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds:g}s", "-s", str(BENCH_DIR / "wrk_paths.lua"),
                               f"{parsed.scheme}://{parsed.host}:{parsed.port}", "--", fh.name],
                              capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(fh.name)
    m = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk failed: {done.stdout} {done.stderr}")
    res = json.loads(m.group(1))
    res["req_per_s"] = res["requests"] / (res["duration_us"] / 1e6)
    res["client"], res["connections"] = "wrk", conns
    return res


async def status_reads(arm: Arm, ids: list[str], seconds: float, conns: int = 16) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = RawConnection(arm.url)
        try:
            while time.perf_counter() < end:
                t = time.perf_counter()
                status, _ = await conn.request("GET", arm.status_path(random.choice(ids)))
                lat.append((time.perf_counter() - t) * 1000)
                errors += status != 200
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "req_per_s": len(lat) / wall, "errors": errors, "latency_ms": summary(lat),
            "connections": conns, "client": "python"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latency-jobs", type=int, default=15)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--get-seconds", type=float, default=5.0)
    args = p.parse_args(argv)

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": 0, "_system_config": HEALTH})
    for name in ("a", "b"):
        cluster.add_node(num_cpus=8, resources={f"node_{name}": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    dashboard = "http://" + ray._private.worker.global_worker.node.address_info["webui_url"]
    ray.shutdown()
    out: dict[str, Any] = {"machine": machine(), "provenance": provenance(), "args": vars(args)}
    try:
        with temp_data_dir("ray") as data_dir:
            server = BenchServer(data_dir, "ray", config=openarts_config(cluster.address, data_dir.parent / "nodes"))
            server.start(timeout=120)
            try:
                arms: list[Arm] = [OpenartsArm(server.api), RayJobsArm(dashboard)]
                for arm in arms:
                    asyncio.run(latency(arm, 2))  # warm-up: agents, worker processes, caches
                for arm in arms:
                    res: dict[str, Any] = {"latency": asyncio.run(latency(arm, args.latency_jobs))}
                    res["throughput"] = asyncio.run(throughput(arm, args.clients, args.seconds))
                    ids = res["throughput"].pop("ids") or [asyncio.run(arm.submit(RawConnection(arm.url), 0))]
                    res["status_reads"] = (status_reads_wrk(arm, ids, args.get_seconds) if shutil.which("wrk")
                                           else asyncio.run(status_reads(arm, ids, args.get_seconds)))
                    out[arm.name] = res
                    print(arm.name, orjson.dumps(res).decode(), flush=True)
            finally:
                server.stop()
    finally:
        cluster.shutdown()
    oa, rj = out["openarts on Ray"], out["Ray Jobs API"]
    done_ratio = oa["latency"]["to_completed_ms"]["p50"] / rj["latency"]["to_completed_ms"]["p50"]
    rate_ratio = oa["throughput"]["jobs_per_s"] / max(rj["throughput"]["jobs_per_s"], 1e-9)
    read_ratio = oa["status_reads"]["req_per_s"] / max(rj["status_reads"]["req_per_s"], 1e-9)
    out["ratios"] = {"completion_time": done_ratio, "jobs_per_s": rate_ratio, "status_reads": read_ratio}
    rows = []
    for name in ("openarts on Ray", "Ray Jobs API"):
        r = out[name]
        run = r["latency"]["to_running_ms"]
        rows.append([name, f"{run['p50']:.0f}" if run else "-", f"{r['latency']['to_completed_ms']['p50']:.0f}",
                     f"{r['throughput']['jobs_per_s']:.1f} ({r['throughput']['jobs']} jobs)",
                     f"{r['status_reads']['req_per_s']:.0f}"])
    print(table(["arm", "submit->Running p50 ms", "submit->Completed p50 ms", "jobs/s", "status reads/s"], rows))
    print(f"completion time {done_ratio:.2f}x of Ray Jobs' (target <= 0.33): {verdict(done_ratio <= 1 / 3)}; "
          f"jobs/s {rate_ratio:.1f}x (target >= 20): {verdict(rate_ratio >= 20)}; "
          f"status reads {read_ratio:.1f}x (target >= 5): {verdict(read_ratio >= 5)}")
    write_result("ray", out)
    result_line("ray", f"completion {done_ratio:.2f}x, jobs/s {rate_ratio:.1f}x, reads {read_ratio:.1f}x of Ray Jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
