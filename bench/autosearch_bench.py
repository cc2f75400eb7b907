"""Hyperparameter search (issue 14): what the platform adds to each trial, and a search's wall time against
the same trials run one after another by hand.

    .venv/bin/python bench/autosearch_bench.py [--trials 20] [--work 0.5] [--parallel 1 4]

The trial program prints `started=<time.time()>` as its first line, sleeps WORK seconds (the training),
then prints `accuracy=<a function of --lr>`. Both are rewards of the search, so the trials table holds
when each trial's program began; the platform's overhead per trial is that moment less the trial's
creation (the search asked the algorithm, made the trial's job, the scheduler placed it, the sandbox
started it). By hand: the same program with the same values, `subprocess.run` one after another.
Also measured in-process: one `suggest()` of each algorithm with 100 earlier trials (the algorithm's
own cost, paid in a thread off the server's loop, once per trial).
Results: bench/results/autosearch.json, docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_PATH, TINY_FLAVOR, run_to_completed, running_server, summary, table, write_result

PROGRAM = """\
import sys, time, math
print(f"started={time.time():.6f}", flush=True)
lr = float(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--lr=")))
time.sleep(float(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--work="))))
print(f"accuracy={1 - (math.log10(lr) + 2) ** 2 / 16:.6f}", flush=True)
"""


def search_body(name: str, trials: int, parallel: int, work: float) -> dict[str, Any]:
    return {
        "kind": "autosearch_job",
        "metadata": {"name": name},
        "algorithm": {
            "command": f"python3 -c {shlex.quote(PROGRAM)}",
            "parameters": [{"name": "work", "value": str(work)}],
            "policies": {"auto_search": {
                "search_params": [{"name": "lr", "param_type": "continuous", "lower_bound": "0.0001",
                                   "upper_bound": "1"}],
                "reward_attrs": [{"name": "accuracy", "mode": "max", "regex": r"accuracy=([0-9.]+)"},
                                 {"name": "started", "mode": "max", "regex": r"started=([0-9.]+)"}],
                "algo_configs": [{"name": "random_search", "params": [
                    {"key": "num_samples", "value": str(trials)}, {"key": "max_concurrent_num", "value": str(parallel)},
                    {"key": "seed", "value": "1"}]}],
            }},
        },
        "spec": {"resource": {"flavor_id": TINY_FLAVOR, "node_count": 1}},
    }


def run_search(client: httpx.Client, api: str, trials: int, parallel: int, work: float) -> dict[str, Any]:
    doc, wall = run_to_completed(client, api, search_body(f"bench-p{parallel}", trials, parallel, work))
    job_id = doc["metadata"]["id"]
    items = client.get(f"{api}/training-jobs/{job_id}/autosearch-trials", params={"limit": 1000}).json()["items"]
    rows = [dict(zip(items["header"], row, strict=True)) for row in items["data"]]
    overhead = [float(r["started"]) * 1000 - int(r["create_time"]) for r in rows]
    return {"wall_s": round(wall, 3), "trials": len(rows), "values": [r["lr"] for r in rows],
            "overhead_ms": summary(overhead)}


def by_hand(values: list[str], work: float) -> dict[str, Any]:
    """The same program and values, one after another, with the wall time to each first line."""
    starts = []
    began = time.time()
    for lr in values:
        t0 = time.time()
        out = subprocess.run(["python3", "-c", PROGRAM, f"--lr={lr}", f"--work={work}"], capture_output=True,
                             text=True, check=True, env={"PATH": BENCH_PATH}).stdout
        starts.append(float(out.split("started=", 1)[1].split()[0]) * 1000 - t0 * 1000)
    return {"wall_s": round(time.time() - began, 3), "to_first_line_ms": summary(starts)}


def ask_costs() -> dict[str, float]:
    """One suggest() per algorithm with 100 earlier completed trials, in ms (median of 5)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from openarts.core.search import Observation, parse_search
    from openarts.core.searchers import suggest

    out = {}
    for algo in ("random_search", "tpe_search", "bayes_opt_search", "anneal_search", "grid_search"):
        space = [{"name": "lr", "param_type": "continuous", "lower_bound": "0.0001", "upper_bound": "1",
                  "discrete_points_num": "200"},
                 {"name": "bs", "param_type": "discrete", "discrete_values": ["16", "32", "64"]}]
        spec = parse_search({"search_params": space, "reward_attrs": [{"name": "a", "regex": "a=(.*)"}],
                             "algo_configs": [{"name": algo}]}, [])
        history = [Observation(i, suggest(spec, 1, [], i), "completed", float(i % 17)) for i in range(100)]
        suggest(spec, 1, history, 100)  # imports
        times = []
        for n in range(5):
            t0 = time.perf_counter()
            suggest(spec, 1, history, 100 + n)
            times.append((time.perf_counter() - t0) * 1000)
        out[algo] = round(statistics.median(times), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--work", type=float, default=0.5, help="seconds each trial trains")
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    results: dict[str, Any] = {"trials": args.trials, "work_s": args.work, "searches": {}}
    with running_server("autosearch") as server, httpx.Client(timeout=30) as client:
        for p in args.parallel:
            results["searches"][str(p)] = run_search(client, server.api, args.trials, p, args.work)
    values = results["searches"][str(args.parallel[0])]["values"]
    results["by_hand"] = by_hand(values, args.work)
    results["ask_ms_100_trials"] = ask_costs()
    hand = results["by_hand"]["to_first_line_ms"]
    rows = [["by hand, one after another", results["by_hand"]["wall_s"], f"{hand['p50']:.0f} / {hand['p90']:.0f}"]]
    for p, r in results["searches"].items():
        rows.append([f"search, max_concurrent_num={p}", r["wall_s"],
                     f"{r['overhead_ms']['p50']:.0f} / {r['overhead_ms']['p90']:.0f}"])
    print(table(["how", f"wall s ({args.trials} trials x {args.work} s)", "to first line ms p50 / p90"], rows))
    print("suggest() with 100 earlier trials, ms:", results["ask_ms_100_trials"])
    print("written", write_result("autosearch", results))


if __name__ == "__main__":
    main()
