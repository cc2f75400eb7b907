"""The console's job list at scale: server time of /console/{project}/jobs with 100,000 jobs stored.

    .venv/bin/python bench/console_bench.py                  # the working tree
    .venv/bin/python bench/console_bench.py --snapshot       # the committed HEAD (git archive)

The store: 100,000 finished jobs in the measured project (bench/fill.py: the store's own create and
transition code, cached under bench/results/cache/), copies of the first 10,000 of them in each of two
other projects (the same rows, new ids, written by SQL while no server runs), then, through the API of
the running server, `--running` `sleep` jobs that run and `--pending` more held in the queue by the
project's running_jobs quota. Each case (phase filters, name searches, every sort, deep pages) is
requested `--requests` times one after the other (and the list's live rows, /jobs/rows, where the tree
measured has them); the server time of a request comes from a Server-Timing header that
bench/servertiming.py adds inside the server (the application's wall time up to its response, the page
rendered), the end-to-end time from the client. Writes bench/results/console.json; see
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from common import (
    PROJECT,
    BenchServer,
    MachineLoad,
    job_body,
    percentile,
    rerun_on_snapshot,
    result_line,
    summary,
    table,
    temp_data_dir,
    wait_quiet,
    write_result,
)
from fill import filled
from openarts.store.schema import attempts, jobs, tasks
from servertiming import parse as parse_timing

OTHER_PROJECTS = ["fedcba9876543210fedcba9876543210", "00000000000000000000000000000001"]
TARGET_MS = 100.0
CASES: dict[str, dict[str, Any]] = {
    "default: page 1, newest first": {},
    "phase Running": {"phase": "Running"},
    "phase Pending": {"phase": "Pending"},
    "phase Failed": {"phase": "Failed"},
    "phases Failed + Terminated": {"phase": ["Failed", "Terminated"]},
    "phases Completed + Failed, page 300": {"phase": ["Completed", "Failed"], "page": 300},
    "phase Completed, page 2000": {"phase": "Completed", "page": 2000},
    "name contains 'bulk-00420' (100 match)": {"name": "bulk-00420"},
    "name contains 'bulk' (all match)": {"name": "bulk"},
    "name contains 'nomatch' (none)": {"name": "nomatch"},
    "name 'bulk-001', phase Failed, by name": {"name": "bulk-001", "phase": "Failed", "sort": "name"},
    "sort created, oldest first": {"order": "asc"},
    "sort updated, newest first": {"sort": "update_time"},
    "sort updated, oldest first": {"sort": "update_time", "order": "asc"},
    "sort name, descending": {"sort": "name"},
    "sort name, ascending": {"sort": "name", "order": "asc"},
    "sort phase, descending": {"sort": "phase"},
    "sort phase, ascending": {"sort": "phase", "order": "asc"},
    "page 2000": {"page": 2000},
    "page 2000, sort name": {"sort": "name", "page": 2000},
    "page 2000, sort phase": {"sort": "phase", "page": 2000},
    "page 2000, sort updated": {"sort": "update_time", "page": 2000},
    "the middle page": {"page": "middle"},
    "the last page": {"page": "last"},
}
ROW = re.compile(r'<td><a href="/console/[^/]+/jobs/[0-9a-f-]+">([^<]+)</a></td>')
FOUND = re.compile(r"<small[^>]*>([0-9,]+) found</small>")
# The list's live rows, which an open list polls (console/joblist.py), where the tree measured has them.
ROWS_CASES: dict[str, dict[str, Any]] = {
    "live rows: default": {},
    "live rows: name contains 'bulk-00420'": {"name": "bulk-00420"},
    "live rows: page 2000, sort updated": {"sort": "update_time", "page": 2000},
}
COUNT = re.compile(r'<span class="count" data-phase="([A-Za-z]+)">([0-9]+)</span>')


def copy_into_projects(db_path: Path, projects: list[str], per_project: int) -> int:
    """Copies of the measured project's first `per_project` jobs (rows, attempts, tasks, events, node
    counts) in each of `projects`, with new ids (also inside the stored document)."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        source = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE project_id = ? ORDER BY create_ms LIMIT ?",
                                             (PROJECT, per_project))]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TEMP TABLE idmap (old TEXT, new TEXT, project TEXT)")
        conn.executemany("INSERT INTO idmap VALUES (?, ?, ?)",
                         [(old, str(uuid.uuid4()), p) for p in projects for old in source])
        conn.execute("CREATE INDEX temp.ix_idmap ON idmap (old)")
        swap = {"id": "m.new", "job_id": "m.new", "project_id": "m.project", "doc": "replace(x.doc, m.old, m.new)"}
        for table, key in ((jobs, "id"), (attempts, "job_id"), (tasks, "job_id")):
            cols = [c.name for c in table.c]
            picked = ", ".join(swap[c] if c in (key, "project_id", "doc") else f"x.{c}" for c in cols)
            conn.execute(f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT {picked} FROM {table.name} x "
                         f"JOIN idmap m ON m.old = x.{key}")
        for name, cols in (("events", "time_ms, level, source, message"), ("node_counts", "time_ms, count")):
            conn.execute(f"INSERT INTO {name} (job_id, {cols}) SELECT m.new, {cols} FROM {name} x "
                         f"JOIN idmap m ON m.old = x.job_id ORDER BY m.project, x.id")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return len(source) * len(projects)


def live_jobs(c: httpx.Client, running: int, pending: int) -> dict[str, Any]:
    """`running` sleeping jobs that run, then `pending` more that the running_jobs quota holds queued."""
    c.put("/training-quotas", json={"quotas": [{"resource": "running_jobs", "quota": running}]}).raise_for_status()
    t0 = time.perf_counter()
    for i in range(running + pending):
        kind = "run" if i < running else "wait"
        c.post("/training-jobs", json=job_body(f"live-{kind}-{i:04d}", "sleep 3600")).raise_for_status()
        if i == running - 1:  # the first ones take the quota before the rest are queued
            _wait_phase_total(c, "Running", running, 120)
    _wait_phase_total(c, "Pending", pending, 120)
    return {"running": running, "pending": pending, "seconds": round(time.perf_counter() - t0, 1)}


def _wait_phase_total(c: httpx.Client, phase: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    body = {"limit": 1, "filters": [{"key": "phase", "operator": "in", "value": [phase]}]}
    while int(c.post("/training-job-searches", json=body).json()["total"]) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {n} jobs {phase} after {timeout} s")
        time.sleep(0.2)


def stats(values: list[float]) -> dict[str, float]:
    """summary() with the 95th percentile."""
    return {**summary(values), "p95": percentile(values, 95)}


def measure(c: httpx.Client, path: str, params: dict[str, Any], n: int, budget_s: float) -> dict[str, Any]:
    """`n` sequential GETs (after two warm-ups; fewer when `budget_s` runs out, at least 5)."""
    server, e2e = [], []
    html = ""
    deadline = time.perf_counter() + budget_s
    for i in range(n + 2):
        t = time.perf_counter()
        r = c.get(path, params=params)
        took = (time.perf_counter() - t) * 1000
        r.raise_for_status()
        html = r.text
        if i >= 2:
            server.append(parse_timing(r.headers.get("server-timing", "")))
            e2e.append(took)
            if len(server) >= 5 and time.perf_counter() > deadline:
                break
    found = FOUND.search(html)
    names = ROW.findall(html)
    return {"params": params, "server_ms": stats(server), "e2e_ms": stats(e2e),
            "total": int(found.group(1).replace(",", "")) if found else -1,
            "counts": {p: int(k) for p, k in COUNT.findall(html)}, "names": names,
            "names_sha1": hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="finished jobs in the measured project")
    parser.add_argument("--other", type=int, default=10_000, help="jobs in each of the two other projects")
    parser.add_argument("--running", type=int, default=20, help="running jobs (sleep) in the measured project")
    parser.add_argument("--pending", type=int, default=200, help="queued jobs in the measured project")
    parser.add_argument("--requests", type=int, default=30, help="requests per case")
    parser.add_argument("--case-seconds", type=float, default=20, help="at most this long per case (>= 5 requests)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="wait up to S seconds for other processes to go quiet first")
    parser.add_argument("--snapshot", action="store_true", help="measure the committed HEAD, not the working tree")
    parser.add_argument("--no-cache", action="store_true", help="refill the store, ignore the cache")
    args = parser.parse_args(argv)
    if args.snapshot and not os.environ.get("OPENARTS_BENCH_SRC"):
        return rerun_on_snapshot(Path(__file__).resolve(), argv if argv is not None else sys.argv[1:])
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    out: dict[str, Any] = {"jobs": args.jobs, "other_projects": {p: args.other for p in OTHER_PROJECTS},
                           "requests_per_case": args.requests, "cases": {}}
    with MachineLoad() as load, temp_data_dir("console") as data_dir:
        data_dir.mkdir(parents=True)
        t0 = time.perf_counter()
        out["fill"] = filled(data_dir, args.jobs, use_cache=not args.no_cache)
        out["fill"]["copied_to_other_projects"] = copy_into_projects(data_dir / "openarts.db", OTHER_PROJECTS,
                                                                     args.other)
        print(f"  store: {out['fill']} in {time.perf_counter() - t0:.0f} s", flush=True)
        server = BenchServer(data_dir, "console", hooks=("servertiming",)).start()
        try:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                api = httpx.Client(base_url=server.api, timeout=60)
                out["live"] = live_jobs(api, args.running, args.pending)
                api.close()
                print(f"  live jobs: {out['live']}", flush=True)
                path = f"/console/{PROJECT}/jobs"
                rows = []
                pages = 1
                for label, params in CASES.items():
                    if params.get("page") in ("middle", "last"):  # from the default page's total
                        params = {**params, "page": pages if params["page"] == "last" else (pages + 1) // 2}
                    res = measure(c, path, params, args.requests, args.case_seconds)
                    pages = pages if params else -(-res["total"] // 20)
                    out["cases"][label] = res
                    s, e = res["server_ms"], res["e2e_ms"]
                    rows.append((label, res["total"], s["n"], s["p50"], s["p95"], s["max"], e["p50"], e["p95"]))
                    print(f"  {label}: server p50 {s['p50']:.1f} ms, max {s['max']:.1f} ms ({res['total']:,} found)",
                          flush=True)
                if c.get(f"{path}/rows").status_code == 200:
                    for label, params in ROWS_CASES.items():
                        res = out["cases"][label] = measure(c, f"{path}/rows", params, args.requests, args.case_seconds)
                        s, e = res["server_ms"], res["e2e_ms"]
                        rows.append((label, res["total"], s["n"], s["p50"], s["p95"], s["max"], e["p50"], e["p95"]))
        finally:
            server.stop()
        out["machine_load"] = load.result()
    print(table(["case (GET /console/P/jobs)", "found", "requests", "server p50", "server p95", "server max",
                 "e2e p50", "e2e p95"], rows))
    worst = max(out["cases"].items(), key=lambda kv: kv[1]["server_ms"]["p95"])
    met = all(r["server_ms"]["p95"] < TARGET_MS for r in out["cases"].values())
    out["headline"] = {"worst_case": worst[0], "worst_p95_ms": worst[1]["server_ms"]["p95"], "target_ms": TARGET_MS,
                       "met": met}
    m = out["machine_load"]
    print(f"  machine load: other processes used {m['other_load_pct_of_machine']:.0f}% of the machine")
    write_result("console", out)
    result_line("console", f"worst case {worst[0]!r}: server p95 {worst[1]['server_ms']['p95']:.1f} ms "
                f"(target < {TARGET_MS:.0f} ms: {'MET' if met else 'MISSED'}), "
                f"default page p50 {out['cases']['default: page 1, newest first']['server_ms']['p50']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
