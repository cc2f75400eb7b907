"""What the sandbox costs, and what a custom image costs to start.

    .venv/bin/python bench/sandbox_bench.py [--jobs 60] [--image-mb 64]

1. submit -> Running and submit -> Completed of sequential `true` jobs on a server with the sandbox off,
   then on (server timestamps, from the job's events); and the executor alone: NodeAgent.start() to
   the exit file of `true`, with and without the sandbox, in one process (no HTTP, no database);
2. an image job's submit -> Running the first time (pull and unpack, from a registry on 127.0.0.1) and
   the second (the unpacked image reused), with an image of busybox plus `--image-mb` MiB of random
   data in one layer.

Results: bench/results/sandbox.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    CONFIG,
    BenchServer,
    event_time,
    job_body,
    job_events,
    result_line,
    summary,
    table,
    temp_data_dir,
    write_result,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import registry_support
from openarts.config import load_settings
from openarts.executors.agent import NodeAgent
from openarts.executors.base import Mount, TaskLaunch
from openarts.executors.sandbox import open_sandbox


def _wait(c: httpx.Client, job_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = str(c.get(f"/training-jobs/{job_id}").json()["status"]["phase"])
        if phase in ("Completed", "Failed", "Abnormal", "Terminated"):
            return phase
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} did not end")


def _timed_job(c: httpx.Client, api: str, body: dict[str, Any]) -> tuple[float, float]:
    job_id = c.post("/training-jobs", json=body).raise_for_status().json()["metadata"]["id"]
    phase = _wait(c, job_id)
    if phase != "Completed":
        raise RuntimeError(f"job {job_id} ended {phase}: {job_events(c, api, job_id)}")
    ev = job_events(c, api, job_id)
    created, started, done = (event_time(ev, "Training job "), event_time(ev, "Job started"),
                              event_time(ev, "Job completed"))
    assert created is not None and started is not None and done is not None, ev
    return float(started - created), float(done - created)


def server_latency(n: int, sandbox: str) -> dict[str, Any]:
    config = CONFIG.replace("[[nodes]]", f'[server]\nsandbox = "{sandbox}"\n\n[[nodes]]', 1)
    with temp_data_dir(f"sandbox-{sandbox}") as data_dir:
        srv = BenchServer(data_dir, f"sandbox-{sandbox}", config=config).start()
        try:
            with httpx.Client(base_url=srv.api, timeout=30) as c:
                running, completed = [], []
                for i in range(n + 5):
                    r, d = _timed_job(c, srv.api, job_body(f"sb-{sandbox}-{i}", "true"))
                    if i >= 5:
                        running.append(r)
                        completed.append(d)
        finally:
            srv.stop()
    return {"submit_to_running_ms": summary(running), "submit_to_completed_ms": summary(completed)}


def executor_spawn(n: int, sandboxed: bool) -> dict[str, Any]:
    """start() and start -> exit file of `/bin/true`, the executor alone."""
    with tempfile.TemporaryDirectory(prefix="openarts-bench-exec-") as tmp:
        root = Path(tmp)
        settings = load_settings(root / "data")
        settings.data_dir.mkdir(parents=True)
        box = open_sandbox(settings, [], [])[0] if sandboxed else None
        if sandboxed and box is None:
            raise RuntimeError("no sandbox on this machine")
        ex = NodeAgent(box)
        home = root / "home"
        home.mkdir()
        starts, totals = [], []
        for i in range(n + 5):
            run_dir = root / "runs" / str(i)
            launch = TaskLaunch("j", i, "worker-0", ["/bin/true"], {"PATH": "/usr/bin:/bin"},
                                "/home/ma-user" if sandboxed else str(home), run_dir,
                                mounts=(Mount(str(home), "/home/ma-user"),) if sandboxed else ())
            t0 = time.perf_counter()
            ex.start(launch)
            t1 = time.perf_counter()
            exit_file = run_dir / "exit"
            while not (exit_file.exists() and exit_file.read_text().strip()):
                time.sleep(0.0002)
            t2 = time.perf_counter()
            if exit_file.read_text().strip() != "0":
                raise RuntimeError(f"`true` exited {exit_file.read_text()}: {(run_dir / 'log').read_text()}")
            if i >= 5:
                starts.append((t1 - t0) * 1000)
                totals.append((t2 - t0) * 1000)
        return {"start_call_ms": summary(starts), "start_to_exit_ms": summary(totals)}


def image_starts(image_mb: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="openarts-bench-image-") as tmp:
        root = Path(tmp)
        reg = registry_support.start_registry(root / "registry")
        try:
            work = root / "image"
            (work / "rootfs" / "data").mkdir(parents=True)
            with open(work / "rootfs" / "data" / "weights.bin", "wb") as fh:
                for _ in range(image_mb):
                    fh.write(os.urandom(2**20))
            t = time.perf_counter()
            image = registry_support.build_and_push(reg, work, "bench/busybox", "1")
            push_s = time.perf_counter() - t
            config = CONFIG + f"""
[[registries]]
host = "{reg.host}"
username = "{registry_support.USER}"
password = "{registry_support.PASSWORD}"
insecure = true
"""
            with temp_data_dir("image") as data_dir:
                srv = BenchServer(data_dir, "image", config=config).start()
                try:
                    with httpx.Client(base_url=srv.api, timeout=30) as c:
                        out = {}
                        for label in ("first", "second"):
                            body = job_body(f"img-{label}", "cat /MARKER")
                            body["algorithm"]["engine"] = {"image_url": image}
                            r, d = _timed_job(c, srv.api, body)
                            out[label] = {"submit_to_running_ms": r, "submit_to_completed_ms": d}
                finally:
                    srv.stop()
        finally:
            reg.stop()
    return {"image_mb": image_mb, "push_s": push_s, **out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--image-mb", type=int, default=64)
    args = ap.parse_args()
    out: dict[str, Any] = {"jobs": args.jobs}
    for mode in ("off", "on"):
        out[f"server_sandbox_{mode}"] = server_latency(args.jobs, mode)
    for sandboxed in (False, True):
        out[f"executor_sandbox_{'on' if sandboxed else 'off'}"] = executor_spawn(args.jobs * 3, sandboxed)
    out["image"] = image_starts(args.image_mb)
    rows = []
    for mode in ("off", "on"):
        s = out[f"server_sandbox_{mode}"]
        for key in ("submit_to_running_ms", "submit_to_completed_ms"):
            rows.append((f"server, sandbox {mode}: {key[:-3].replace('_', ' ')}", s[key]["p50"], s[key]["p90"],
                         s[key]["max"]))
        e = out[f"executor_sandbox_{mode}"]
        for key in ("start_call_ms", "start_to_exit_ms"):
            rows.append((f"executor, sandbox {mode}: {key[:-3].replace('_', ' ')}", e[key]["p50"], e[key]["p90"],
                         e[key]["max"]))
    print(table(["`true` (ms)", "p50", "p90", "max"], rows))
    img = out["image"]
    print(table([f"image job, busybox + {img['image_mb']} MiB (ms)", "submit -> Running", "submit -> Completed"],
                [(k, img[k]["submit_to_running_ms"], img[k]["submit_to_completed_ms"]) for k in ("first", "second")]))
    added = (out["server_sandbox_on"]["submit_to_running_ms"]["p50"]
             - out["server_sandbox_off"]["submit_to_running_ms"]["p50"])
    spawn = (out["executor_sandbox_on"]["start_to_exit_ms"]["p50"]
             - out["executor_sandbox_off"]["start_to_exit_ms"]["p50"])
    out["sandbox_adds_submit_to_running_ms"] = added
    out["sandbox_adds_spawn_to_exit_ms"] = spawn
    write_result("sandbox", out)
    first, second = img["first"]["submit_to_running_ms"], img["second"]["submit_to_running_ms"]
    result_line("sandbox", f"sandbox adds {added:.1f} ms to submit->Running p50 (target <= 5), {spawn:.1f} ms "
                f"to spawn->exit of `true`; image job submit->Running first {first:.0f} ms, second {second:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
