"""Benchmark of the pure planning function (scheduler/plan.py), no server involved.

10,000 pending jobs of mixed sizes and priorities on 1,000 simulated nodes with 8 GPUs each:
  - a full pass on a busy cluster (little fits: the pass is mostly rejections and reservations);
  - a pass right after capacity frees up (the whole cluster empty: placements per second).

    .venv/bin/python bench/scheduler_bench.py [--jobs 10000] [--nodes 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from openarts.scheduler.plan import Demand, NodeFree, PendingJob, RunningJob, plan

SHAPES = [  # (cpu cores, memory GB, gpus) per worker, node counts
    ((4, 32, 1), (1, 2)),
    ((8, 64, 2), (1, 2, 4)),
    ((16, 128, 4), (1, 2)),
    ((32, 256, 8), (1, 2, 4, 8)),
    ((2, 8, 0), (1, 4)),
]


def make_jobs(n: int, rng: random.Random) -> list[PendingJob]:
    jobs = []
    for i in range(n):
        (cpu, mem, gpu), counts = rng.choice(SHAPES)
        jobs.append(PendingJob(f"job-{i}", "pool", Demand(cpu * 1000, mem * 1024, gpu), rng.choice(counts),
                               rng.choice((1, 1, 1, 2, 3)), i, f"project-{i % 10}"))
    return jobs


def make_nodes(n: int) -> list[NodeFree]:
    return [NodeFree(f"node-{i}", "pool", f"10.0.{i // 256}.{i % 256}", 96_000, 768 * 1024, list(range(8)),
                     {"hyperinstance": f"sn-{i // 16}"}) for i in range(n)]


def busy(nodes: list[NodeFree], rng: random.Random) -> tuple[list[NodeFree], list[RunningJob]]:
    """Fill ~95% of the GPUs with running jobs of 1-node shape (some preemptible)."""
    running = []
    for i, node in enumerate(nodes):
        while len(node.gpus) > 0 and rng.random() < 0.95:
            d = Demand(8000, 64 * 1024, min(2, len(node.gpus)))
            gpus = node.take(d)
            running.append(RunningJob(f"run-{i}-{len(node.gpus)}", "pool", 1, rng.random() < 0.3, i,
                                      ((node.name, d, tuple(gpus)),)))
    return nodes, running


def timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(1)
    jobs = make_jobs(args.jobs, rng)

    results = {}

    def busy_pass() -> None:
        nodes, running = busy(make_nodes(args.nodes), random.Random(2))
        t0 = time.perf_counter()
        p = plan(jobs, nodes, running)
        results["busy"] = (time.perf_counter() - t0, len(p.placements), len(p.preemptions))

    def free_pass() -> None:
        nodes = make_nodes(args.nodes)
        t0 = time.perf_counter()
        p = plan(jobs, nodes, [])
        results["free"] = (time.perf_counter() - t0, len(p.placements), 0)

    busy_times, free_times = [], []
    for _ in range(args.repeat):
        busy_pass()
        busy_times.append(results["busy"][0])
        free_pass()
        free_times.append(results["free"][0])
    b, f = results["busy"], results["free"]
    print(f"{args.jobs} pending jobs, {args.nodes} nodes x 8 GPUs, {args.repeat} runs")
    print(f"busy cluster: full pass p50 {statistics.median(busy_times) * 1000:.1f} ms "
          f"(max {max(busy_times) * 1000:.1f} ms), placed {b[1]}, preemptions {b[2]}")
    rate = f[1] / statistics.median(free_times)
    print(f"capacity freed: full pass p50 {statistics.median(free_times) * 1000:.1f} ms, placed {f[1]} jobs "
          f"-> {rate:,.0f} placements/s")


if __name__ == "__main__":
    main()
