"""Authentication overhead: GET job details throughput in open mode, with AK/SK signatures and with
X-Auth-Token, in the same run on the same machine.

Method. Two servers run side by side from fresh data directories with the same config and the same
number of completed jobs: one open (no credentials), one enforcing (an access key, the replay cache
guarding every method - replay_protection = "strict", as the default did when the first runs were
recorded; the default now guards writes only - and rate limiting on with a limit too high to bite, so
the bookkeeping of both is still paid). wrk replays a file of pre-built requests (bench/wrk_signed.lua).
For AK/SK every request is signed in advance with its own signed X-Openarts-Nonce, so every signature is
distinct and each is sent exactly once: the replay cache sees no repeats, and the server does the full
work - parse, key lookup, canonical request, HMAC, constant-time compare, replay-cache check and insert
- on every request. (Signing ahead keeps the signing cost out of the load generator, which shares the
machine's cores with the server; the X-Sdk-Date of all of them is within the 15-minute window.) The open
arm replays the same requests without the Authorization header, the token arm with X-Auth-Token instead.
Arms alternate (in rotating order) for --rounds rounds; the table shows medians. Besides requests per
second it reports the server process's CPU time per request (psutil, before and after each wrk run): the
server is one event loop, so CPU per request is what bounds its capacity, and unlike req/s on a shared
2-core machine it does not move when other processes take CPU. A run whose signed requests ran out (wrk
wrapped around and resent some) is reported as such: those repeats are refused as replays.

    .venv/bin/python bench/auth_bench.py [--seconds 5] [--rounds 6] [--connections 16] [--jobs 50]

Writes bench/results/auth.json and prints a Markdown table. Needs wrk. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from openarts.security import credentials, db, tokens
from openarts.security.client import SdkHmacAuth
from openarts.security.secretbox import SecretBox, load_master_key
from openarts.security.signer import sign

BENCH_DIR = Path(__file__).resolve().parent

PROJECT = "0123456789abcdef0123456789abcdef"
CONFIG = """
[server]
reconcile_interval_seconds = 1

[[nodes]]
name = "bench"
cpu_cores = 256
memory_gb = 1024

[security]
rate_limit_per_second = 1000000000
rate_limit_burst = 1000000000
replay_protection = "strict"
"""
SIGNED = ("content-type", "host", "user-agent", "x-openarts-nonce", "x-project-id", "x-sdk-date")


class Srv:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        (data_dir / "config.toml").write_text(CONFIG)
        self.log = (data_dir / "server.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARTS_")}
        self.proc = subprocess.Popen([sys.executable, "-m", "openarts.cli.main", "serve", "--port", "0",
                                      "--data-dir", str(data_dir), "--log-level", "warning"],
                                     stdout=self.log, stderr=self.log, start_new_session=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = data_dir / "server.json"
            if info.exists():
                self.url = json.loads(info.read_text())["url"]
                try:
                    if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {data_dir / 'server.log'}")
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def cpu(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_jobs(client: httpx.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {"kind": "job", "metadata": {"name": f"bench-{i}"}, "algorithm": {"command": "true"},
                "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u", "node_count": 1}}}
        resp = client.post("/training-jobs", json=body)
        resp.raise_for_status()
        ids.append(resp.json()["metadata"]["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = client.post("/training-job-searches", json={"limit": 1, "filters": [
            {"key": "phase", "operator": "in", "value": ["Completed"]}]}).json()["total"]
        if done >= n:
            return ids
        time.sleep(0.5)
    raise RuntimeError("jobs did not complete")


def write_requests(path: Path, host: str, ids: list[str], count: int,
                   auth: Callable[[str, dict[str, str]], dict[str, str]]) -> None:
    """`count` GETs of random job details, one per line, each with a fresh nonce."""
    lines = []
    for _ in range(count):
        p = f"/v2/{PROJECT}/training-jobs/{random.choice(ids)}"
        headers = {"Host": host, "Content-Type": "application/json", "User-Agent": "openarts-bench/1.0",
                   "X-Project-Id": PROJECT, "X-Openarts-Nonce": uuid.uuid4().hex}
        headers.update(auth(p, headers))
        lines.append(p + "\t" + "\t".join(f"{k}: {v}" for k, v in headers.items()))
    path.write_text("\n".join(lines) + "\n")


def wrk(url: str, requests_file: Path, seconds: float, threads: int, connections: int) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s",
           str(BENCH_DIR / "wrk_signed.lua"), url, "--", str(requests_file), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    res: dict[str, Any] = json.loads(line[len("BENCH_JSON "):])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def others_busy(seconds: float = 3.0) -> float:
    """Share of one core (%) used by processes outside this benchmark's tree over `seconds`."""
    def ours() -> float:
        me = psutil.Process()
        total = 0.0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    busy0, own0 = _busy(), ours()
    time.sleep(seconds)
    return max(0.0, (_busy() - busy0) - (ours() - own0)) / seconds * 100


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def wait_quiet(max_wait: float) -> float:
    deadline = time.monotonic() + max_wait
    while True:
        share = others_busy()
        if share < 10 or time.monotonic() >= deadline:
            return share
        print(f"waiting for a quiet machine: other processes use {share:.0f}% of a core", flush=True)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                   if x.startswith("model name"))
    return {"cpu": cpu, "logical_cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--wait-quiet", type=float, default=600, metavar="S",
                    help="first wait up to S seconds for other processes to use < 10%% of a core")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("auth_bench needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="openarts-authbench-"))
    open_dir, auth_dir = tmp / "open", tmp / "auth"
    open_dir.mkdir()
    auth_dir.mkdir()
    engine = db.open_security_db(auth_dir / "security.db")
    cred, secret = credentials.create(engine, SecretBox(load_master_key(auth_dir)), [PROJECT], "bench")
    with engine.begin() as conn:
        token, _ = tokens.issue(conn, "bench", PROJECT, 3600, "cli", cred.access_key)
    engine.dispose()
    servers = {"open": Srv(open_dir), "auth": Srv(auth_dir)}
    try:
        with httpx.Client(base_url=f"{servers['open'].url}/v2/{PROJECT}", timeout=30) as c:
            ids = {"open": make_jobs(c, args.jobs)}
        with httpx.Client(base_url=f"{servers['auth'].url}/v2/{PROJECT}", timeout=30,
                          auth=SdkHmacAuth(cred.access_key, secret, PROJECT)) as c:
            ids["auth"] = make_jobs(c, args.jobs)

        def aksk(host: str) -> Callable[[str, dict[str, str]], dict[str, str]]:
            return lambda p, h: sign("GET", f"http://{host}{p}", h, b"", cred.access_key, secret, sign_only=SIGNED)

        arms: dict[str, tuple[str, Callable[[str, dict[str, str]], dict[str, str]]]] = {
            "open": ("open", lambda p, h: {}),
            "aksk": ("auth", aksk(servers["auth"].host)),
            "token": ("auth", lambda p, h: {"X-Auth-Token": token}),
        }
        results: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
        expected_rps = 5000.0
        quiet = wait_quiet(args.wait_quiet)
        names = list(arms)
        for round_ in range(args.rounds + 1):  # round 0 warms up and is discarded
            order = names[round_ % len(names):] + names[:round_ % len(names)]  # rotate: no arm always first
            for arm in order:
                srv_name, auth = arms[arm]
                srv = servers[srv_name]
                seconds = 2.0 if round_ == 0 else args.seconds
                count = int(expected_rps * seconds * 2) + 1000
                req_file = tmp / f"{arm}.req"
                write_requests(req_file, srv.host, ids[srv_name], count, auth)
                cpu0 = srv.cpu()
                res = wrk(srv.url, req_file, seconds, args.threads, args.connections)
                res["server_cpu_us_per_request"] = (srv.cpu() - cpu0) / max(res["requests"], 1) * 1e6
                res["prepared"] = count
                if arm == "open":
                    expected_rps = max(expected_rps, res["rps"])
                if round_:
                    results[arm].append(res)
                print(f"round {round_} {arm:5}: {res['rps']:8.0f} req/s  "
                      f"server CPU {res['server_cpu_us_per_request']:6.0f} us/req  p50 {res['p50_us'] / 1000:.2f} ms  "
                      f"p99 {res['p99_us'] / 1000:.2f} ms  non-2xx {res['status_errors']}  wrapped {res['wrapped']}",
                      flush=True)
        summary = {arm: {"median_rps": statistics.median(r["rps"] for r in rs),
                         "median_cpu_us": statistics.median(r["server_cpu_us_per_request"] for r in rs),
                         "median_p50_ms": statistics.median(r["p50_us"] for r in rs) / 1000,
                         "median_p99_ms": statistics.median(r["p99_us"] for r in rs) / 1000,
                         "non_2xx": sum(r["status_errors"] for r in rs), "wrapped": sum(r["wrapped"] for r in rs)}
                   for arm, rs in results.items()}
        base, base_cpu = summary["open"]["median_rps"], summary["open"]["median_cpu_us"]
        for arm in summary:
            summary[arm]["vs_open"] = summary[arm]["median_rps"] / base
            # CPU-bound capacity relative to open mode: immune to other processes slowing the whole machine
            summary[arm]["capacity_vs_open"] = base_cpu / summary[arm]["median_cpu_us"]
        out = {"machine": machine(), "args": vars(args), "summary": summary, "runs": results,
               "others_busy_pct_at_start": round(quiet, 1), "loadavg_1m_at_end": os.getloadavg()[0],
               "when": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        (BENCH_DIR / "results" / "auth.json").write_text(json.dumps(out, indent=2))
        print("\n| mode | req/s (median) | vs open | server CPU per request | capacity vs open | p50 ms | p99 ms "
              "| non-2xx |")
        print("|---|---|---|---|---|---|---|---|")
        for arm, s in summary.items():
            print(f"| {arm} | {s['median_rps']:.0f} | {s['vs_open'] * 100:.1f}% | {s['median_cpu_us']:.0f} us | "
                  f"{s['capacity_vs_open'] * 100:.1f}% | {s['median_p50_ms']:.2f} | {s['median_p99_ms']:.2f} | "
                  f"{s['non_2xx']} |")
        bad = [a for a, s in summary.items() if s["non_2xx"] or s["wrapped"]]
        if bad:
            print(f"\nWARNING: non-2xx answers or reused requests in {bad}: the numbers are not valid.")
            return 1
        return 0
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
