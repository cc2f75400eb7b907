"""openarts benchmark suite.

    .venv/bin/python bench/run.py all
    .venv/bin/python bench/run.py latency|throughput|get|search|rss|logs [--profile]

Each benchmark starts its own `openarts serve` on 127.0.0.1 in a temporary data directory, stops it
afterwards, prints a table and a `RESULT` line, and writes bench/results/NAME.json. `--profile` attaches
py-spy to the server during the measured phase (bench/results/NAME.pyspy.txt and a top-functions table).
Times come from the server's own timestamps (job events, create/start times) wherever the API has them.
See docs/benchmarks.md for the numbers and what limits them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from common import (
    BENCH_DIR,
    PROJECT,
    TERMINAL,
    BenchServer,
    MachineLoad,
    Profiler,
    RawConnection,
    all_jobs,
    bench_env,
    count_phase,
    event_time,
    job_body,
    job_events,
    rerun_on_snapshot,
    result_line,
    running_server,
    summary,
    table,
    temp_data_dir,
    trace_table,
    verdict,
    wait_quiet,
    write_result,
)
from fill import cache_path, filled

Headline = tuple[str, float, str, bool]  # (metric, value, target, met)
GET_JOBS, SEARCH_JOBS = 10_000, 100_000  # jobs in the stores of `get` and `search`
CURRENT_LOAD: list[MachineLoad | None] = [None]


def save(name: str, out: dict[str, Any]) -> None:
    """write_result() with the machine's load during the benchmark, printed too."""
    load = CURRENT_LOAD[0]
    if load is not None:
        out["machine_load"] = m = load.result()
        print(f"  machine load during the run: other processes used {m['other_cpu_seconds']:.1f} CPU-s "
              f"({m['other_load_pct_of_machine']:.0f}% of the machine) over {m['wall_seconds']:.0f} s; "
              f"this benchmark {m['benchmark_cpu_seconds']:.1f} CPU-s")
    write_result(name, out)


# -- shared --------------------------------------------------------------------------------------


async def submit_many(api: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """POST every body with `clients` concurrent keep-alive connections; returns ids (in order), timings,
    errors and how many times a connection had to be reopened."""
    ids: list[str | None] = [None] * len(bodies)
    latencies: list[float] = []
    errors: list[str] = []
    transport_errors: list[str] = []
    next_index = 0
    conns = [RawConnection(api) for _ in range(clients)]

    async def worker(conn: RawConnection) -> None:
        nonlocal next_index
        while next_index < len(bodies):
            i = next_index
            next_index += 1
            t = time.perf_counter()
            try:
                status, payload = await conn.request("POST", "/training-jobs", bodies[i])
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                transport_errors.append(f"{type(exc).__name__} on job {i}")
                errors.append(f"job {i}: no answer")
                continue
            latencies.append((time.perf_counter() - t) * 1000)
            if status == 201:
                ids[i] = orjson.loads(payload)["metadata"]["id"]
            elif b"ModelArts.2751" in payload:  # a retried POST whose first try had created the job
                ids[i] = await _find_by_name(api, bodies[i]["metadata"]["name"])
            else:
                errors.append(f"{status} {payload[:200]!r}")

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    seconds = time.perf_counter() - t0
    reopened = sum(c.reconnects for c in conns)
    return {"ids": ids, "post_ms": latencies, "errors": errors, "transport_errors": transport_errors,
            "reconnects": reopened, "seconds": seconds}


async def _find_by_name(api: str, name: str) -> str | None:
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        r = await client.post("/training-job-searches",
                              json={"limit": 50, "filters": [{"key": "name", "operator": "like", "value": [name]}]})
    for item in r.json().get("items", []):
        if item["metadata"]["name"] == name:
            return str(item["metadata"]["id"])
    return None


def wait_count(client: httpx.Client, api: str, phases: tuple[str, ...], target: int, timeout: float,
               interval: float = 0.2, bad: tuple[str, ...] = ()) -> tuple[int, float]:
    """Poll the search API until `target` jobs are in `phases` (or in `bad`); returns (count, seconds)."""
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < timeout:
        n = count_phase(client, api, phases)
        m = count_phase(client, api, bad) if bad else 0
        if n + m >= target:
            break
        time.sleep(interval)
    return n, time.perf_counter() - t0


def fmt_headlines(headlines: list[Headline]) -> str:
    return table(["metric", "measured", "target", "verdict"],
                 [(m, v, t, verdict(ok)) for m, v, t, ok in headlines])


# -- 1. latency ----------------------------------------------------------------------------------

LATENCY_COMMANDS = {"true": "true", "python3 -c pass": "python3 -c pass"}


def bench_latency(args: argparse.Namespace) -> list[Headline]:
    """Submit -> Running and submit -> Completed for sequential trivial jobs, from the job's events."""
    n, warm = args.jobs or 100, 5
    out: dict[str, Any] = {"jobs_per_command": n, "warmup_jobs": warm, "commands": {}}
    headlines: list[Headline] = []
    rows = []
    with running_server("latency", trace=args.trace) as srv, httpx.Client(base_url=srv.api, timeout=30) as c, \
            Profiler("latency", srv.pid, args.profile, args.idle) as prof:
        for slug, (label, command) in enumerate(LATENCY_COMMANDS.items()):
            running, completed, run_to_done, post_ms, queued, queued_to_run = [], [], [], [], [], []
            for i in range(warm + n):
                t = time.perf_counter()
                r = c.post("/training-jobs", json=job_body(f"lat-{slug}-{i:04d}", command))
                post = (time.perf_counter() - t) * 1000
                r.raise_for_status()
                job_id = r.json()["metadata"]["id"]
                deadline = time.monotonic() + 30
                phase = ""
                while time.monotonic() < deadline:
                    phase = c.get(f"/training-jobs/{job_id}").json()["status"]["phase"]
                    if phase in TERMINAL:
                        break
                    time.sleep(0.025)  # sparse polls: every GET runs on the server's event loop too
                if phase != "Completed":
                    raise RuntimeError(f"job {job_id} ({command!r}) ended {phase!r}")
                ev = job_events(c, srv.api, job_id)
                created = event_time(ev, "Training job ", " created.")
                started = event_time(ev, "Job started")
                done = event_time(ev, "Job completed")
                pending = event_time(ev, "Job queued")
                assert created is not None and started is not None and done is not None, ev
                if i >= warm:
                    if pending is not None:
                        queued.append(pending - created)
                        queued_to_run.append(started - pending)
                    running.append(started - created)
                    completed.append(done - created)
                    run_to_done.append(done - started)
                    post_ms.append(post)
            stats = {"submit_to_running_ms": summary(running), "submit_to_completed_ms": summary(completed),
                     "running_to_completed_ms": summary(run_to_done), "post_round_trip_ms": summary(post_ms),
                     "submit_to_pending_ms": summary(queued), "pending_to_running_ms": summary(queued_to_run)}
            out["commands"][label] = stats
            for key, name in (("submit_to_pending_ms", "submit -> Pending (queued)"),
                              ("pending_to_running_ms", "Pending -> Running"),
                              ("submit_to_running_ms", "submit -> Running"),
                              ("submit_to_completed_ms", "submit -> Completed"),
                              ("running_to_completed_ms", "Running -> Completed"),
                              ("post_round_trip_ms", "POST round trip (client)")):
                s = stats[key]
                rows.append((f"{label}: {name}", s["p50"], s["p90"], s["p99"], s["max"]))
            p50 = stats["submit_to_running_ms"]["p50"]
            headlines.append((f"`{label}` submit -> Running p50 (ms)", p50, "<= 20", p50 <= 20))
        cpu = srv.cpu_seconds()
    print(table(["latency (ms; server timestamps, except POST)", "p50", "p90", "p99", "max"], rows))
    if srv.trace_stats:
        jobs = 2 * (n + warm)
        print(f"\n  where a job's time goes (bench/tracer.py, {jobs} jobs, one at a time):")
        print(trace_table(srv.trace_stats, jobs))
        out["trace"] = srv.trace_stats
    out["server_cpu_seconds"] = cpu
    out["profile"] = prof.as_dict()
    out["headlines"] = headlines
    save("latency", out)
    t, p = out["commands"]["true"], out["commands"]["python3 -c pass"]
    result_line("latency", f"true: submit->Running p50 {t['submit_to_running_ms']['p50']:.0f} ms "
                f"p99 {t['submit_to_running_ms']['p99']:.0f} ms, submit->Completed p50 "
                f"{t['submit_to_completed_ms']['p50']:.0f} ms p99 {t['submit_to_completed_ms']['p99']:.0f} ms; "
                f"python3 -c pass: submit->Running p50 {p['submit_to_running_ms']['p50']:.0f} ms, "
                f"submit->Completed p50 {p['submit_to_completed_ms']['p50']:.0f} ms "
                f"p99 {p['submit_to_completed_ms']['p99']:.0f} ms")
    return headlines


# -- 2. throughput -------------------------------------------------------------------------------


async def _throughput_run(srv: BenchServer, n: int, clients: int, timeout: float) -> dict[str, Any]:
    bodies = [job_body(f"tp-{i:05d}", "true") for i in range(n)]
    state: dict[str, Any] = {"final": 0, "polls": 0}
    submitted = asyncio.Event()

    async def poll() -> float:
        # one cheap search per poll (limit 1: only its total is read); each poll costs the server's event loop
        # a few ms, so polls are sparse: the server-side span below does not depend on them
        final = {"limit": 1, "filters": [{"key": "phase", "operator": "in", "value": list(TERMINAL)}]}
        conn = RawConnection(srv.api)
        try:
            while True:
                _, payload = await conn.request("POST", "/training-job-searches", final)
                state["final"] = orjson.loads(payload)["total"]
                state["polls"] += 1
                if state["final"] >= n:
                    return time.perf_counter()
                if time.perf_counter() - t0 > timeout:
                    return float("nan")
                await asyncio.sleep(0.2 if submitted.is_set() else 0.5)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    poller = asyncio.create_task(poll())
    sub = await submit_many(srv.api, bodies, clients)
    submitted.set()
    t_done = await poller
    sub["wall_seconds"] = t_done - t0
    sub.update(state)
    return sub


def bench_throughput(args: argparse.Namespace) -> list[Headline]:
    """2,000 `true` jobs from 32 concurrent clients: first submit -> all Completed."""
    n, clients = args.jobs or 2000, args.clients or 32
    with running_server("throughput", trace=args.trace) as srv:
        cpu0, cpu_client0 = srv.cpu_seconds(), time.process_time()
        with Profiler("throughput", srv.pid, args.profile, args.idle) as prof:
            run = asyncio.run(_throughput_run(srv, n, clients, timeout=240))
        cpu1, cpu_client1 = srv.cpu_seconds(), time.process_time()
        with httpx.Client(base_url=srv.api, timeout=60) as c:
            docs = all_jobs(c, srv.api)
    done = [d for d in docs if d["status"]["phase"] == "Completed"]
    created = [d["metadata"]["create_time"] for d in docs]
    ends = [d["status"]["start_time"] + d["status"]["duration"] for d in done]
    server_span = (max(ends) - min(created)) / 1000 if done else float("nan")
    wall = run["wall_seconds"]
    rate = len(done) / wall if wall == wall else len(done) / 240
    server_rate = len(done) / server_span if done else 0.0
    post = summary(run["post_ms"])
    out = {
        "jobs": n, "clients": clients, "completed": len(done), "not_completed": len(docs) - len(done),
        "post_errors": run["errors"][:10], "post_error_count": len(run["errors"]),
        "connection_errors": run["transport_errors"][:20], "connection_error_count": len(run["transport_errors"]),
        "connections_reopened": run["reconnects"],
        "wall_seconds_client": wall, "jobs_per_second_client": rate,
        "span_seconds_server": server_span, "jobs_per_second_server": server_rate,
        "submit_seconds": run["seconds"], "submit_rate": n / run["seconds"], "post_ms": post,
        "search_polls": run["polls"],
        "cpu_seconds": {"server": cpu1["server"] - cpu0["server"],
                        "server_event_loop_thread": cpu1["main_thread"] - cpu0["main_thread"],
                        "shims_and_jobs": cpu1["children"] - cpu0["children"],
                        "bench_client": cpu_client1 - cpu_client0},
        "profile": prof.as_dict(),
    }
    print(table(["throughput", "value"], [
        ("jobs completed", f"{len(done):,} / {n:,}"),
        ("POST errors / keep-alive connections reopened", f"{len(run['errors'])} / {run['reconnects']}"),
        ("wall: first submit -> all Completed seen (client)", f"{wall:.2f} s"),
        ("rate (client wall)", f"{rate:.1f} jobs/s"),
        ("span: first create_time -> last end (server)", f"{server_span:.2f} s"),
        ("rate (server timestamps)", f"{server_rate:.1f} jobs/s"),
        ("submission phase alone", f"{run['seconds']:.2f} s ({n / run['seconds']:.0f} POST/s)"),
        ("POST latency p50 / p99 (client)", f"{post['p50']:.1f} / {post['p99']:.1f} ms"),
        ("CPU: server (loop thread) / shims+jobs / bench client",
         "{server:.1f} ({server_event_loop_thread:.1f}) / {shims_and_jobs:.1f} / {bench_client:.1f} s"
         .format(**out["cpu_seconds"])),
        ("server event-loop thread busy", f"{out['cpu_seconds']['server_event_loop_thread'] / wall * 100:.0f}%"),
    ]))
    if srv.trace_stats:
        print(f"\n  where the time goes (bench/tracer.py, {n} jobs, {clients} clients):")
        print(trace_table(srv.trace_stats, n))
        out["trace"] = srv.trace_stats
    headlines: list[Headline] = [("throughput, 2,000 `true` jobs (jobs/s)", rate, ">= 200", rate >= 200)]
    out["headlines"] = headlines
    save("throughput", out)
    result_line("throughput", f"{len(done)}/{n} jobs Completed in {wall:.2f} s = {rate:.1f} jobs/s "
                f"(server timestamps: {server_rate:.1f} jobs/s); {clients} clients")
    return headlines


# -- 3. get --------------------------------------------------------------------------------------


def _wrk(url: str, ids_file: Path, seconds: float, threads: int, conns: int) -> tuple[dict[str, Any], float]:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(BENCH_DIR / "wrk_get.lua"),
           url, "--", str(ids_file), PROJECT]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    cpu = 0.0
    while proc.poll() is None:
        try:
            t = ps.cpu_times()
            cpu = t.user + t.system
        except psutil.Error:
            break
        time.sleep(0.2)
    text = proc.communicate()[0]
    m = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
    if not m:
        raise RuntimeError(f"wrk failed:\n{text}")
    return json.loads(m.group(1)), cpu


async def _asyncio_load(api: str, ids: list[str], seconds: float, conns: int) -> dict[str, Any]:
    """Fallback when wrk is not installed: `conns` keep-alive connections, closed loop."""
    import random

    lat: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker(conn: RawConnection) -> None:
        nonlocal errors
        try:
            while time.perf_counter() < end:
                t = time.perf_counter()
                status, _ = await conn.request("GET", f"/training-jobs/{random.choice(ids)}")
                lat.append((time.perf_counter() - t) * 1e6)
                errors += status != 200
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(RawConnection(api)) for _ in range(conns)))
    dur = time.perf_counter() - t0
    s = summary(lat)
    return {"requests": len(lat), "duration_us": dur * 1e6, "status_errors": errors, "mean_us": s["mean"],
            "p50_us": s["p50"], "p90_us": s["p90"], "p99_us": s["p99"], "max_us": s["max"]}


def bench_get(args: argparse.Namespace) -> list[Headline]:
    """GET job details with 10,000 jobs stored: 16 connections for ~10 s."""
    n, conns, seconds = args.jobs or GET_JOBS, args.clients or 16, args.duration or 10.0
    fill_how = args.fill
    fill_stats: dict[str, Any] = {}

    def prepare(data_dir: Path) -> None:
        if fill_how == "store":
            fill_stats.update(filled(data_dir, n, use_cache=not args.no_cache))

    with running_server("get", prepare) as srv, httpx.Client(base_url=srv.api, timeout=60) as c:
        if fill_how == "post":
            t0 = time.perf_counter()
            sub = asyncio.run(submit_many(srv.api, [job_body(f"get-{i:05d}", "true") for i in range(n)], 32))
            count, _ = wait_count(c, srv.api, ("Completed",), n, timeout=240, interval=0.5,
                                  bad=("Failed", "Abnormal"))
            fill_stats.update({"jobs": n, "via": "POST (32 clients), jobs ran `true` to Completed",
                               "completed": count, "seconds": round(time.perf_counter() - t0, 1),
                               "post_errors": len(sub["errors"])})
            ids = [i for i in sub["ids"] if i]
        else:
            ids = [d["metadata"]["id"] for d in all_jobs(c, srv.api)]
        stored = int(c.post("/training-job-searches", json={"limit": 1}).json()["total"])
        print(f"  {stored:,} jobs stored ({fill_stats})")
        with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as fh:
            fh.write("\n".join(ids) + "\n")
            ids_file = Path(fh.name)
        threads = min(2, conns)
        use_wrk = shutil.which("wrk") is not None and not args.no_wrk
        try:
            time.sleep(2)  # let the supervisor settle after the fill
            cpu0 = srv.cpu_seconds()
            with Profiler("get", srv.pid, args.profile, args.idle) as prof:
                if use_wrk:
                    _wrk(srv.url, ids_file, 2, threads, conns)  # warm-up
                    cpu0 = srv.cpu_seconds()
                    res, load_cpu = _wrk(srv.url, ids_file, seconds, threads, conns)
                    tool = f"wrk -t{threads} -c{conns} -d{seconds:g}s (Lua: random id of {len(ids):,})"
                else:
                    t = time.process_time()
                    res = asyncio.run(_asyncio_load(srv.api, ids, seconds, conns))
                    load_cpu = time.process_time() - t
                    tool = f"asyncio raw HTTP/1.1, {conns} connections, {seconds:g} s"
            cpu1 = srv.cpu_seconds()
            evidence = _get_evidence(srv.data_dir, ids[len(ids) // 2])
        finally:
            ids_file.unlink(missing_ok=True)
    rps = res["requests"] / (res["duration_us"] / 1e6)
    p50, p99 = res["p50_us"] / 1000, res["p99_us"] / 1000
    errors = res["status_errors"] + sum(res.get(k, 0) for k in ("connect_errors", "read_errors", "write_errors",
                                                                 "timeouts"))
    server_cpu = cpu1["server"] - cpu0["server"]
    out = {"jobs_stored": stored, "fill": fill_stats, "load_generator": tool, "connections": conns,
           "seconds": seconds, "result": res, "requests_per_second": rps, "p50_ms": p50, "p99_ms": p99,
           "errors": errors, "cpu_seconds": {"server": server_cpu, "load_generator": load_cpu},
           "profile": prof.as_dict(), "sql_evidence": evidence}
    print(table(["GET /training-jobs/{id}", "value"], [
        ("load generator", tool),
        ("requests", f"{res['requests']:,} ({errors} errors)"),
        ("throughput", f"{rps:,.0f} req/s"),
        ("latency p50 / p90 / p99 / max",
         f"{p50:.2f} / {res['p90_us'] / 1000:.2f} / {p99:.2f} / {res['max_us'] / 1000:.2f} ms"),
        ("CPU: server / load generator (2 cores shared)", f"{server_cpu:.1f} / {load_cpu:.1f} s of {seconds:g} s"),
        ("server CPU per request", f"{server_cpu / max(res['requests'], 1) * 1e6:.0f} us"),
    ]))
    if "error" not in evidence:
        st, rd = evidence["store_reads"], evidence["render_us"]
        print(f"  in-process, the store reads of one GET: {st['statements']} statements, {st['store_us']:.0f} us; "
              f"rendering the document: {rd:.0f} us")
    headlines: list[Headline] = [("GET details throughput (req/s)", rps, ">= 3,000", rps >= 3000),
                                 ("GET details p99 (ms)", p99, "<= 10", p99 <= 10)]
    out["headlines"] = headlines
    save("get", out)
    result_line("get", f"{rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, {errors} errors "
                f"({stored:,} jobs stored, {conns} connections, {tool.split(' (')[0]})")
    return headlines


def _get_evidence(data_dir: Path, job_id: str) -> dict[str, Any]:
    """The store reads behind one GET (statements, in-process time) and the render time."""
    try:
        from openarts.service.document import job_document
    except ImportError:  # a snapshot from before the job document moved below the API
        from openarts.api.render import job_document  # type: ignore[no-redef]
    from openarts.store import queries as q
    from sqlcheck import connect, median_us, store_time

    db = data_dir / "openarts.db"
    try:
        def reads(conn: Any) -> Any:
            row = q.get_job(conn, PROJECT, job_id)
            return row, q.job_details(conn, [row])[row.id]

        store_reads = store_time(db, reads)
        con = connect(db)
        row, details = reads(con)
        con.close()
        render = median_us(lambda: job_document(row, details, int(time.time() * 1000)), 500)
        return {"store_reads": store_reads, "render_us": render}
    except Exception as exc:  # evidence is best effort: the store code is still changing
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- 4. search -----------------------------------------------------------------------------------

SEARCH_HEADLINE = "phase in [Failed, Terminated]"
SEARCH_QUERIES: dict[str, list[str]] = {
    SEARCH_HEADLINE: ["Failed", "Terminated"],
    "phase in [Completed]": ["Completed"],
    "phase in [Abnormal]": ["Abnormal"],
    "phase in [Running, Pending] (no match)": ["Running", "Pending"],
}


def bench_search(args: argparse.Namespace) -> list[Headline]:
    """POST /training-job-searches over 100,000 stored jobs: phase `in` filter, sort by create_time, limit 50."""
    n, reps = args.jobs or SEARCH_JOBS, args.requests or 200
    budget_end = time.perf_counter() + 280  # the whole subcommand stays under 5 minutes, cold fill included
    fill_stats: dict[str, Any] = {}

    def prepare(data_dir: Path) -> None:
        fill_stats.update(filled(data_dir, n, use_cache=not args.no_cache))

    rows: list[tuple[Any, ...]] = []
    out_q: dict[str, dict[str, Any]] = {}
    headlines: list[Headline] = []
    with running_server("search", prepare) as srv, httpx.Client(base_url=srv.api, timeout=60) as c:
        stored = int(c.post("/training-job-searches", json={"limit": 1}).json()["total"])
        print(f"  {stored:,} jobs stored ({fill_stats})")
        time.sleep(1.5)
        with Profiler("search", srv.pid, args.profile, args.idle) as prof:
            for q_index, (label, phases) in enumerate(SEARCH_QUERIES.items()):
                body = {"limit": 50, "offset": 0, "sort_by": "create_time", "order": "desc",
                        "filters": [{"key": "phase", "operator": "in", "value": phases}]}
                for _ in range(10):  # warm-up
                    c.post("/training-job-searches", json=body).raise_for_status()
                lat = []
                total = count = 0
                n_req = reps if label == SEARCH_HEADLINE else max(20, reps // 2)
                # bounded: a slow query (or a slow cold fill before) leaves fewer samples, never more time
                share = (budget_end - time.perf_counter()) / (len(SEARCH_QUERIES) - q_index)
                deadline = time.perf_counter() + max(8.0, min(45.0, share))
                for _ in range(n_req):
                    if time.perf_counter() > deadline:
                        break
                    t = time.perf_counter()
                    r = c.post("/training-job-searches", json=body)
                    lat.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                    data = r.json()
                    total, count = data["total"], data["count"]
                s = summary(lat)
                out_q[label] = {"phases": phases, "total": total, "returned": count, "latency_ms": s}
                rows.append((label, total, count, len(lat), s["p50"], s["p90"], s["p99"], s["max"]))
                if label == SEARCH_HEADLINE:
                    headlines.append((f"search {label} p50 (ms)", s["p50"], "<= 20", s["p50"] <= 20))
        evidence = _search_evidence(srv.data_dir)
    print(table(["search (limit 50, sort create_time desc)", "total", "items", "requests", "p50 ms", "p90 ms",
                 "p99 ms", "max ms"], rows))
    print("  (latency is the client's round trip on keep-alive; sequential requests)")
    for label, plans in evidence.items():
        if isinstance(plans, list):
            print(f"  SQL of {label}:")
            for st in plans:
                print(f"    {st['sqlite3_ms']:8.2f} ms  {st['sql'][:90]}")
                for line in st["plan"][:4]:
                    print(f"                 plan: {line}")
                if len(st["plan"]) > 4:
                    print(f"                 plan: ... ({len(st['plan']) - 4} more lines)")
    out = {"jobs_stored": stored, "fill": fill_stats, "requests_per_query": reps, "queries": out_q,
           "profile": prof.as_dict(), "sql_evidence": evidence, "headlines": headlines}
    save("search", out)
    result_line("search", "; ".join(f"{k}: p50 {v['latency_ms']['p50']:.1f} ms p99 {v['latency_ms']['p99']:.1f} ms"
                                     for k, v in out_q.items()) + f" ({stored:,} jobs)")
    return headlines


def _search_evidence(data_dir: Path) -> dict[str, Any]:
    """The statements behind a search and behind the supervisor's every pass, their plans and bare times."""
    from openarts.store import queries as q
    from sqlcheck import capture, explain

    db = data_dir / "openarts.db"
    out: dict[str, Any] = {}
    try:
        for label in (SEARCH_HEADLINE, "phase in [Running, Pending] (no match)"):
            filters = [{"key": "phase", "operator": "in", "value": SEARCH_QUERIES[label]}]

            def search(conn: Any, filters: list[dict[str, Any]] = filters) -> Any:
                _, rows = q.search_jobs(conn, PROJECT, filters=filters, sort_by="create_time", order="desc",
                                        offset=0, limit=50)
                return q.job_details(conn, rows)

            out[f"search {label}"] = explain(db, capture(db, search))
        out["the supervisor's active_jobs() (every pass, at least 1/s)"] = explain(db, capture(db, q.active_jobs))
    except Exception as exc:  # evidence is best effort: the store code is still changing
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# -- 5. rss --------------------------------------------------------------------------------------


def _alive_groups(data_dir: Path) -> int:
    alive = 0
    for pid_file in (data_dir / "jobs").glob("*/attempts/*/*/worker.pid"):
        try:
            os.killpg(int(pid_file.read_text()), 0)
            alive += 1
        except (OSError, ValueError):
            pass
    return alive


def _live_children(proc: psutil.Process) -> int:
    n = 0
    for ch in proc.children(recursive=True):
        try:
            if ch.status() != psutil.STATUS_ZOMBIE:
                n += 1
        except psutil.Error:
            pass
    return n


def bench_rss(args: argparse.Namespace) -> list[Headline]:
    """Server RSS with 1,000 running `sleep 600` jobs; then terminate them all and check they are gone."""
    n, clients = args.jobs or 1000, args.clients or 32
    with running_server("rss") as srv, httpx.Client(base_url=srv.api, timeout=60) as c:
        proc = srv.process()
        time.sleep(1)
        rss_idle = srv.rss_mb()
        trace: list[tuple[float, float]] = []  # (s since start, MB), the whole run
        stop = threading.Event()

        def sample() -> None:
            start = time.perf_counter()
            while not stop.wait(0.25):
                with contextlib.suppress(psutil.Error):
                    trace.append((round(time.perf_counter() - start, 2), round(srv.rss_mb(), 1)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        with Profiler("rss", srv.pid, args.profile, args.idle) as prof:
            sub = asyncio.run(submit_many(srv.api, [job_body(f"rss-{i:04d}", "sleep 600") for i in range(n)],
                                          clients))
            running, _ = wait_count(c, srv.api, ("Running",), n, timeout=180, interval=0.5,
                                       bad=("Failed", "Abnormal"))
        all_running_s = time.perf_counter() - t0
        samples = []
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < 12:  # covers one metrics pass (10 s) over every job
            samples.append(srv.rss_mb())
            time.sleep(0.5)
        rss_running = samples[-1]
        groups_running = _alive_groups(srv.data_dir)
        children_running = _live_children(proc)
        fds = proc.num_fds()
        ids = [i for i in sub["ids"] if i]

        async def terminate_all() -> list[int]:
            queue = list(ids)
            codes: list[int] = []

            async def worker(conn: RawConnection) -> None:
                try:
                    while queue:
                        job_id = queue.pop()
                        status, _ = await conn.request("POST", f"/training-jobs/{job_id}/actions",
                                                       {"action_type": "terminate"})
                        codes.append(status)
                finally:
                    await conn.close()

            await asyncio.gather(*(worker(RawConnection(srv.api)) for _ in range(clients)))
            return codes

        t2 = time.perf_counter()
        codes = asyncio.run(terminate_all())
        terminated, _ = wait_count(c, srv.api, ("Terminated",), len(ids), timeout=120, interval=0.5)
        terminate_s = time.perf_counter() - t2
        time.sleep(1)
        groups_after = _alive_groups(srv.data_dir)
        children_after = _live_children(proc)
        rss_after = srv.rss_mb()
        stop.set()
        sampler.join()
    peak = max(samples)
    peak_all = max(mb for _, mb in trace)
    out = {"jobs": n, "running_reached": running, "seconds_to_all_running": all_running_s,
           "submit_seconds": sub["seconds"], "post_errors": len(sub["errors"]),
           "rss_mb": {"idle": rss_idle, "all_running": rss_running, "peak_while_running": peak,
                      "peak_whole_run": peak_all, "after_terminate": rss_after, "samples_while_running": samples,
                      "trace": trace},
           "server_fds_while_running": fds, "worker_groups_alive_while_running": groups_running,
           "server_descendants_while_running": children_running,
           "terminate": {"non_202": sum(1 for s in codes if s != 202), "terminated": terminated,
                         "seconds": terminate_s, "worker_groups_alive_after": groups_after,
                         "server_descendants_alive_after": children_after},
           "profile": prof.as_dict()}
    print(table(["rss", "value"], [
        ("jobs Running", f"{running:,} / {n:,} after {all_running_s:.1f} s"),
        ("server RSS idle", f"{rss_idle:.1f} MB"),
        ("server RSS with all running (peak over 12 s)", f"{rss_running:.1f} MB ({peak:.1f} MB)"),
        ("server open fds / live descendants / live worker groups", f"{fds} / {children_running} / {groups_running}"),
        ("terminate all: Terminated", f"{terminated:,} in {terminate_s:.1f} s "
                                       f"({out['terminate']['non_202']} non-202 answers)"),
        ("after: live worker groups / live descendants", f"{groups_after} / {children_after}"),
        ("server RSS after", f"{rss_after:.1f} MB"),
        ("server RSS peak, whole run (submit, run, terminate)", f"{peak_all:.1f} MB"),
    ]))
    gone = groups_after == 0 and children_after == 0 and terminated == len(ids)
    headlines: list[Headline] = [("server RSS, 1,000 running jobs (MB)", peak, "<= 200", peak <= 200),
                                 ("server RSS peak, whole run incl. terminate (MB)", peak_all, "<= 200",
                                  peak_all <= 200),
                                 ("all 1,000 terminated, no process left", float(gone), "1 (yes)", gone)]
    out["headlines"] = headlines
    save("rss", out)
    result_line("rss", f"RSS {rss_idle:.0f} MB idle, {peak:.0f} MB peak with {running} running jobs, "
                f"{rss_after:.0f} MB after, {peak_all:.0f} MB peak overall; "
                f"terminated {terminated}/{len(ids)} in {terminate_s:.1f} s, "
                f"{groups_after} worker groups and {children_after} processes left")
    return headlines


# -- 6. logs -------------------------------------------------------------------------------------

# 1 GiB of output in 1 MiB lines, the same command in both arms (/bin/sh -c, as openarts runs it).
LOG_COMMAND = ("python3 -c \"import sys; b = b'x' * 1048575 + b'\\n'; w = sys.stdout.buffer.write; "
               "[w(b) for _ in range(1024)]\"")
LOG_BYTES = 1024 * 1024 * 1024


def bench_logs(args: argparse.Namespace) -> list[Headline]:
    """A task writing 1 GiB to stdout, through openarts vs by hand with stdout redirected to a file."""
    reps = args.requests or 5
    hand, e2e, run_only, client = [], [], [], []
    with running_server("logs") as srv, httpx.Client(base_url=srv.api, timeout=60) as c:
        scratch = srv.data_dir.parent / "by-hand"
        scratch.mkdir()
        with Profiler("logs", srv.pid, args.profile, args.idle) as prof:
            for rep in range(-1, reps):  # rep -1 warms both arms up (page cache, interpreter) and is dropped
                # by hand
                target = scratch / "out.log"
                os.sync()
                t = time.perf_counter()
                subprocess.run(["/bin/sh", "-c", f"{LOG_COMMAND} > {target} 2>&1"], check=True, env=bench_env(),
                               cwd=scratch, stdin=subprocess.DEVNULL)
                hand.append(time.perf_counter() - t)
                size = target.stat().st_size
                target.unlink()
                if size != LOG_BYTES:
                    raise RuntimeError(f"by-hand output is {size} bytes, not {LOG_BYTES}")
                # through openarts
                os.sync()
                t = time.perf_counter()
                r = c.post("/training-jobs", json=job_body(f"logs-{rep + 1}", LOG_COMMAND))
                r.raise_for_status()
                job_id = r.json()["metadata"]["id"]
                phase = ""
                while phase not in TERMINAL:
                    time.sleep(0.1)  # sparse polls: each GET takes server CPU from the writer (2 vCPUs)
                    phase = c.get(f"/training-jobs/{job_id}").json()["status"]["phase"]
                client.append(time.perf_counter() - t)
                if phase != "Completed":
                    raise RuntimeError(f"log job ended {phase}")
                ev = job_events(c, srv.api, job_id)
                created = event_time(ev, "Training job ", " created.")
                started, done = event_time(ev, "Job started"), event_time(ev, "Job completed")
                assert created is not None and started is not None and done is not None
                e2e.append((done - created) / 1000)
                run_only.append((done - started) / 1000)
                log = srv.data_dir / "jobs" / job_id / "attempts" / "1" / "worker-0" / "log"
                size = log.stat().st_size
                c.delete(f"/training-jobs/{job_id}").raise_for_status()
                deadline = time.monotonic() + 30
                while log.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                log.unlink(missing_ok=True)
                if size != LOG_BYTES:
                    raise RuntimeError(f"openarts log is {size} bytes, not {LOG_BYTES}")
                print(f"  {f'run {rep + 1}' if rep >= 0 else 'warm-up'}: by hand {hand[-1]:.3f} s; openarts "
                      f"submit->Completed {e2e[-1]:.3f} s (Running->Completed {run_only[-1]:.3f} s, "
                      f"client saw {client[-1]:.3f} s)", flush=True)
                if rep < 0:
                    for samples in (hand, e2e, run_only, client):
                        samples.pop()
    med = {k: summary(v)["p50"] for k, v in (("hand", hand), ("e2e", e2e), ("run", run_only), ("client", client))}
    over_e2e = (med["e2e"] / med["hand"] - 1) * 100
    over_run = (med["run"] / med["hand"] - 1) * 100
    print(table([f"1 GiB to stdout (median of {reps})", "seconds", "vs by hand"], [
        ("by hand: sh -c CMD > file", med["hand"], ""),
        ("openarts: submit -> Completed (server events)", med["e2e"], f"{over_e2e:+.1f}%"),
        ("openarts: Running -> Completed (server events)", med["run"], f"{over_run:+.1f}%"),
        ("openarts: POST -> Completed seen (client, 100 ms polls)", med["client"],
         f"{(med['client'] / med['hand'] - 1) * 100:+.1f}%"),
    ]))
    out = {"bytes": LOG_BYTES, "command": LOG_COMMAND, "repetitions": reps,
           "seconds": {"by_hand": hand, "openarts_submit_to_completed": e2e, "openarts_running_to_completed": run_only,
                       "openarts_client_observed": client},
           "median_seconds": med, "overhead_pct_submit_to_completed": over_e2e,
           "overhead_pct_running_to_completed": over_run, "profile": prof.as_dict()}
    headlines: list[Headline] = [("1 GiB log: openarts submit->Completed vs by hand (%)", over_e2e, "<= +5%",
                                  over_e2e <= 5)]
    out["headlines"] = headlines
    save("logs", out)
    result_line("logs", f"by hand {med['hand']:.3f} s, openarts {med['e2e']:.3f} s submit->Completed "
                f"({over_e2e:+.1f}%), {med['run']:.3f} s Running->Completed ({over_run:+.1f}%); medians of {reps}")
    return headlines


# -- fixtures ------------------------------------------------------------------------------------

def prepare(args: argparse.Namespace) -> None:
    """Build the stores `get` and `search` start from (cached in bench/results/cache/) ahead of time,
    so that no benchmark pays for a fill (100,000 jobs take 3-5 minutes on the reference machine)."""
    for n in (GET_JOBS, SEARCH_JOBS):
        if cache_path(n).exists() and not args.no_cache:
            print(f"  store of {n:,} jobs: cached ({cache_path(n).name})")
            continue
        t0 = time.perf_counter()
        with temp_data_dir("prepare") as data_dir:
            data_dir.mkdir(parents=True)
            stats = filled(data_dir, n, use_cache=True)
        print(f"  store of {n:,} jobs: filled in {time.perf_counter() - t0:.0f} s ({stats})", flush=True)


# -- CLI -----------------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[argparse.Namespace], list[Headline]]] = {
    "latency": bench_latency,
    "throughput": bench_throughput,
    "get": bench_get,
    "search": bench_search,
    "rss": bench_rss,
    "logs": bench_logs,
}


def run_on_snapshot(argv: list[str]) -> int:
    """Re-run this command on a snapshot of HEAD's src/ (the working tree may be mid-edit)."""
    return rerun_on_snapshot(Path(__file__).resolve(), argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=[*BENCHES, "all", "prepare"],
                        help="one benchmark, all of them (after `prepare`), or only build the cached stores")
    parser.add_argument("--profile", action="store_true", help="py-spy the server during the measurement")
    parser.add_argument("--idle", action="store_true", help="with --profile: sample waiting threads too")
    parser.add_argument("--trace", action="store_true",
                        help="latency/throughput: time openarts' main steps inside the server (bench/tracer.py)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="before each benchmark, wait up to S s for other processes to go quiet")
    parser.add_argument("--snapshot", action="store_true",
                        help="measure the committed HEAD (git archive into a temp dir), not the working tree")
    parser.add_argument("--jobs", type=int, help="jobs (latency: per command; get/search: stored)")
    parser.add_argument("--clients", type=int, help="concurrent clients / connections")
    parser.add_argument("--duration", type=float, help="get: seconds of load")
    parser.add_argument("--requests", type=int, help="search: requests per query; logs: repetitions")
    parser.add_argument("--fill", choices=["post", "store"], default="store",
                        help="get: fill by POSTing real jobs, or through the store code (default)")
    parser.add_argument("--no-cache", action="store_true", help="get/search: refill the store, ignore the cache")
    parser.add_argument("--no-wrk", action="store_true", help="get: use the asyncio load generator, not wrk")
    args = parser.parse_args(argv)
    if args.snapshot and not os.environ.get("OPENARTS_BENCH_SRC"):
        return run_on_snapshot(argv if argv is not None else sys.argv[1:])
    if args.benchmark in ("prepare", "all"):
        print("\n=== prepare (fixtures, not a benchmark) ===", flush=True)
        prepare(args)
        if args.benchmark == "prepare":
            return 0
        args.no_cache = False  # just built
    names = list(BENCHES) if args.benchmark == "all" else [args.benchmark]
    if args.benchmark == "all" and (args.jobs or args.clients or args.requests):
        parser.error("--jobs/--clients/--requests apply to a single benchmark")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the servers' cleanups
    summary_rows: list[tuple[str, str, float, str, str]] = []
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        t0 = time.perf_counter()
        try:
            with MachineLoad() as LOAD:
                CURRENT_LOAD[0] = LOAD
                heads = BENCHES[name](args)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            failed.append(name)
            print(f"RESULT {name}: ERROR {type(exc).__name__}: {exc}", flush=True)
            if len(names) == 1:
                raise
            continue
        print(f"  ({name} took {time.perf_counter() - t0:.0f} s)")
        summary_rows.extend((name, m, v, t, verdict(ok)) for m, v, t, ok in heads)
    if len(names) > 1:
        print("\n=== summary ===")
        print(table(["benchmark", "metric", "measured", "target", "verdict"], summary_rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
