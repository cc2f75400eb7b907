"""Tags (issue 15): the TMS filter and count, the project's tag list and the job list's tags filter, on a
store of many jobs.

    .venv/bin/python bench/tags_bench.py [--jobs 100000] [--reps 30]

The store is filled as bench/fill.py fills it (finished jobs, one a second, all within the last 31
days: the job list's tags filter needs a create_time window of at most 31 days), then tagged while no
server runs, straight into job_tags: every job `team=t<i % 10>` (10% of the jobs per value), every
100th also `release=v<i % 3>` (about 0.33% per value). Then a server on it answers each query REPS
times, one at a time; the table is each one's latency as the client sees it, and its answer's size.
Results: bench/results/tags.json, docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT, running_server, summary, table, write_result
from fill import filled
from openarts.config import load_settings


def tag_store(data_dir: Path) -> int:
    """Tag every job of the filled store; the number of tag rows written."""
    conn = sqlite3.connect(load_settings(data_dir).db_path)
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY create_ms")]
        rows = [(job_id, "team", f"t{i % 10}") for i, job_id in enumerate(ids)]
        rows += [(job_id, "release", f"v{i % 3}") for i, job_id in enumerate(ids) if i % 100 == 0]
        conn.executemany("INSERT INTO job_tags (job_id, key, value) VALUES (?, ?, ?)", rows)
        conn.commit()
        return len(rows)
    finally:
        conn.close()


def timed(call: Callable[[], httpx.Response], reps: int) -> tuple[dict[str, float], Any]:
    times, body = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        r = call()
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        body = r.json()
    return summary(times), body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    info: dict[str, Any] = {}

    def prepare(data_dir: Path) -> None:
        info["fill"] = filled(data_dir, args.jobs)
        info["tag_rows"] = tag_store(data_dir)

    now_ms = int(time.time() * 1000)
    window = [str(now_ms - 30 * 86400 * 1000), str(now_ms)]
    tms = f"/v2/{PROJECT}/modelarts-training-job"
    queries: list[tuple[str, str, str, dict[str, Any] | None, Callable[[Any], Any]]] = [
        ("filter team=t3 (10%), a page of 10", "POST", f"{tms}/resource-instances/filter?limit=10",
         {"tags": [{"key": "team", "values": ["t3"]}]}, lambda b: b["total_count"]),
        ("count team=t3", "POST", f"{tms}/resource-instances/count",
         {"tags": [{"key": "team", "values": ["t3"]}]}, lambda b: b["total_count"]),
        ("filter release=v1 (0.33%), a page of 10", "POST", f"{tms}/resource-instances/filter?limit=10",
         {"tags": [{"key": "release", "values": ["v1"]}]}, lambda b: b["total_count"]),
        ("count team=t3 and release=v1", "POST", f"{tms}/resource-instances/count",
         {"tags": [{"key": "team", "values": ["t3"]}, {"key": "release", "values": ["v1"]}]},
         lambda b: b["total_count"]),
        ("count team=t0 and release=v1", "POST", f"{tms}/resource-instances/count",
         {"tags": [{"key": "team", "values": ["t0"]}, {"key": "release", "values": ["v1"]}]},
         lambda b: b["total_count"]),
        ("count without any tag", "POST", f"{tms}/resource-instances/count", {"without_any_tag": True},
         lambda b: b["total_count"]),
        ("the project's tags", "GET", f"{tms}/tags", None, lambda b: len(b["tags"])),
        ("job list, tags team=t3, 30 days, 10 a page", "POST", f"/v2/{PROJECT}/training-job-searches", {
            "limit": 10, "tags": [{"key": "team", "values": ["t3"]}],
            "filters": [{"key": "create_time", "operator": "between", "value": window}]}, lambda b: b["total"]),
    ]
    rows, results = [], {}
    with running_server("tags", prepare=prepare) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        for label, method, path, body, size in queries:
            stats, answer = timed(lambda m=method, p=path, b=body: c.request(m, p, json=b), args.reps)
            results[label] = {**stats, "answer": size(answer)}
            rows.append([label, size(answer), f"{stats['p50']:.1f} / {stats['p90']:.1f}"])
    print(table([f"query ({args.jobs:,} jobs)", "matches", "ms p50 / p90"], rows))
    print("written", write_result("tags", {"jobs": args.jobs, "reps": args.reps, **info, "queries": results}))


if __name__ == "__main__":
    main()
