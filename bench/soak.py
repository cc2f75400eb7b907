"""Soak: many SDK clients on one access key for a fixed time; 0 errors and the server's memory levels off.

    .venv/bin/python bench/soak.py [--minutes 15] [--clients 32] [--sample-seconds 5] [--poll-seconds 0.25]

Method. A real `openarts serve` on 127.0.0.1 (an ephemeral port) in a fresh data directory with one
access key, so every request is authenticated with an AK/SK signature. --clients threads, each with its
own official SDK client (huaweicloudsdkmodelarts) on that one key, loop until the time is up. One loop:

  - create a job, in turn: a short one (`sleep 0.2`) read every --poll-seconds until it has completed;
    a long one (`sleep 100000`) read until it runs; and every fourth loop a queued one, in a one-core
    pool that a blocker job fills for the whole soak, so it waits in Pending;
  - read one job that every thread reads (identical GETs from several threads in the same second:
    what a replay cache that guards reads refuses);
  - search: the running jobs (the same filter from every thread), and this thread's jobs by name;
  - every third loop also the job's events and tasks;
  - terminate the long or queued job and read it until it is Terminated.

A loop ends with its job ended, so the load follows the server's pace (a client that submitted
faster than the supervisor starts jobs would measure a growing backlog, not the server's memory).
At the end the shared job and the blocker are terminated. Every answer other than the expected
status, and every job that does not reach the expected phase within 120 s, counts as an error, by
kind (operation, HTTP status and ModelArts code, or the exception's type). A sampler reads the
server's RSS and the job store's size every --sample-seconds. The memory verdict compares the
highest RSS of the last third of the run with the highest of the middle third: it has levelled off
when the last third is no more than max(2 MiB, 3%) above the middle one. The rate limiter stays on
with a limit far above the load (its bookkeeping is paid, it never refuses).

Two bounded tables fill before they level: SQLite's page cache of the job store grows with the store
until it reaches the store's cache_size (the samples carry the store's size and the server's RssAnon,
which holds that cache), and the replay cache keeps each write's signature for clock_skew_seconds
(15 minutes by default; ~116 bytes per create or terminate), so it stops growing only after that.

Prints a table and a `RESULT soak:` line, writes bench/results/soak.json (--name to change). Exit
status 1 when there were errors or the RSS did not level off. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from common import (
    CONFIG,
    PROJECT,
    TERMINAL,
    BenchServer,
    MachineLoad,
    job_body,
    result_line,
    table,
    temp_data_dir,
    write_result,
)

QUEUE_POOL = "soak-queue"
SECURITY = """
[[nodes]]
name = "soak-queue"
pool = "soak-queue"
cpu_cores = 1
memory_gb = 4

[security]
rate_limit_per_second = 1000000
rate_limit_burst = 1000000
"""
SHORT, LONG = "sleep 0.2", "sleep 100000"
LEVEL_TOLERANCE_MIB, LEVEL_TOLERANCE_FRACTION = 2.0, 0.03


def create_key(data_dir: Path) -> tuple[str, str]:
    """An access key for PROJECT in the data directory's security.db (before the server starts)."""
    from openarts.security import credentials, db
    from openarts.security.secretbox import SecretBox, load_master_key

    engine = db.open_security_db(data_dir / "security.db")
    try:
        cred, secret = credentials.create(engine, SecretBox(load_master_key(data_dir)), [PROJECT], "soak")
    finally:
        engine.dispose()
    return cred.access_key, secret


def sdk_client(url: str, ak: str, sk: str) -> Any:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient

    return ModelArtsClient.new_builder().with_credentials(BasicCredentials(ak, sk, PROJECT)).with_endpoint(url).build()


@dataclass
class Tally:
    """Requests and errors, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)  # by operation
    errors: Counter[str] = field(default_factory=Counter)  # by kind
    examples: dict[str, str] = field(default_factory=dict)  # one message per kind
    jobs: Counter[str] = field(default_factory=Counter)  # created, by kind

    def request(self, op: str) -> None:
        with self.lock:
            self.requests[op] += 1

    def error(self, op: str, exc: BaseException) -> None:
        status = getattr(exc, "status_code", None)
        kind = f"{op}: {status} {getattr(exc, 'error_code', '')}".strip() if status else f"{op}: {type(exc).__name__}"
        with self.lock:
            self.errors[kind] += 1
            self.examples.setdefault(kind, str(getattr(exc, "error_msg", "") or exc)[:300])


class Client:
    """One thread's SDK client and its loop."""

    def __init__(self, index: int, url: str, ak: str, sk: str, hot_job: str, tally: Tally, poll: float = 0.25,
                 job_timeout: float = 120.0) -> None:
        self.index = index
        self.sdk = sdk_client(url, ak, sk)
        self.hot_job = hot_job
        self.tally = tally
        self.poll = poll
        self.job_timeout = job_timeout
        self.loops = 0

    def call(self, op: str, fn: Any, expect: int = 200) -> Any:
        self.tally.request(op)
        try:
            resp = fn()
        except Exception as exc:  # the SDK raises for every error answer; transport errors too
            self.tally.error(op, exc)
            return None
        if resp.status_code != expect:
            self.tally.error(op, RuntimeError(f"status {resp.status_code}, expected {expect}"))
            return None
        return resp

    def create(self, kind: str, pool: str | None = None) -> str | None:
        from huaweicloudsdkmodelarts.v1 import CreateTrainingJobRequest

        body = job_body(f"soak-{self.index}-{self.loops}-{kind}", SHORT if kind == "short" else LONG)
        if pool is not None:
            body["spec"]["resource"]["pool_id"] = pool
        resp = self.call("create", lambda: self.sdk.create_training_job(CreateTrainingJobRequest(body=body)), 201)
        if resp is None:
            return None
        with self.tally.lock:
            self.tally.jobs[kind] += 1
        return str(resp.metadata.id)

    def read(self, job_id: str, op: str = "read") -> str | None:
        """The job's phase (a read of its details), or None after an error."""
        from huaweicloudsdkmodelarts.v1 import ShowTrainingJobDetailsRequest

        resp = self.call(op, lambda: self.sdk.show_training_job_details(ShowTrainingJobDetailsRequest(
            training_job_id=job_id)))
        return None if resp is None else str(resp.status.phase)

    def wait(self, job_id: str, phases: tuple[str, ...]) -> str | None:
        """Read the job every `poll` seconds until it is in one of `phases` (an error after job_timeout)."""
        deadline = time.monotonic() + self.job_timeout
        while True:
            phase = self.read(job_id, "read (wait)")
            if phase is None or phase in phases:
                return phase
            if time.monotonic() > deadline:
                self.tally.error("wait", TimeoutError(f"job {job_id} still {phase} after {self.job_timeout:g} s"))
                return None
            time.sleep(self.poll)

    def one_loop(self) -> None:
        """Create a job, read it until it runs (short: until it ends), read a job every thread reads,
        search twice, sometimes list its events and tasks, terminate it (not the short ones) and read
        it until it has ended. The loop ends with its job ended: the load follows the server's pace."""
        from huaweicloudsdkmodelarts.v1 import (
            ListTrainingJobEventsRequest,
            ListTrainingJobsRequest,
            ListTrainingJobTasksRequest,
            StopTrainingJobRequest,
        )

        sdk = self.sdk
        kind = "queued" if self.loops % 4 == 3 else ("long" if self.loops % 2 else "short")
        job_id = self.create(kind, QUEUE_POOL if kind == "queued" else None)
        if job_id is not None:
            if kind == "queued":  # it waits behind the pool's blocker job until terminated
                phase = self.read(job_id)
                if phase not in (None, "Creating", "Pending"):
                    self.tally.error("queued job", RuntimeError(f"job {job_id} is {phase}, not waiting"))
            else:
                phase = self.wait(job_id, ("Running", *TERMINAL))
                if kind == "short" and phase == "Running":
                    phase = self.wait(job_id, TERMINAL)
                if phase not in (None, "Running", "Completed"):
                    self.tally.error("job", RuntimeError(f"{kind} job {job_id} ended {phase}"))
        self.read(self.hot_job, "read (shared job)")
        running = {"limit": 10, "offset": 0, "filters": [{"key": "phase", "operator": "in", "value": ["Running"]}]}
        self.call("search", lambda: sdk.list_training_jobs(ListTrainingJobsRequest(body=running)))
        mine = {"limit": 10, "offset": 0, "sort_by": "create_time", "order": "desc",
                "filters": [{"key": "name", "operator": "like", "value": [f"soak-{self.index}-"]}]}
        self.call("search", lambda: sdk.list_training_jobs(ListTrainingJobsRequest(body=mine)))
        if job_id is not None and self.loops % 3 == 0:
            self.call("events", lambda: sdk.list_training_job_events(ListTrainingJobEventsRequest(
                training_job_id=job_id, limit=50)))
            self.call("tasks", lambda: sdk.list_training_job_tasks(ListTrainingJobTasksRequest(
                training_job_id=job_id)))
        stopped = job_id is not None and kind != "short" and self.call("terminate", lambda: sdk.stop_training_job(
            StopTrainingJobRequest(training_job_id=job_id, body={"action_type": "terminate"})), 202) is not None
        if stopped and job_id is not None:
            phase = self.wait(job_id, TERMINAL)
            if phase not in (None, "Terminated"):
                self.tally.error("job", RuntimeError(f"terminated {kind} job {job_id} ended {phase}"))
        self.loops += 1

    def run(self, until: float) -> None:
        while time.monotonic() < until:
            self.one_loop()


def rss_mib(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / 2**20


def levelled_off(series: list[tuple[float, float]]) -> dict[str, Any]:
    """Highest RSS of the middle third vs the last third of the samples."""
    n = len(series)
    if n < 6:
        return {"levelled_off": False, "why": f"only {n} samples"}
    middle = [r for _, r in series[n // 3: 2 * n // 3]]
    last = [r for _, r in series[2 * n // 3:]]
    growth = max(last) - max(middle)
    allowed = max(LEVEL_TOLERANCE_MIB, LEVEL_TOLERANCE_FRACTION * max(middle))
    return {"levelled_off": growth <= allowed, "max_middle_third_mib": round(max(middle), 1),
            "max_last_third_mib": round(max(last), 1), "growth_mib": round(growth, 1),
            "allowed_growth_mib": round(allowed, 1)}


def memory_kinds(pid: int) -> dict[str, float]:
    """RssAnon (the heaps: Python's and SQLite's page caches), RssFile (mapped files: code, libraries)
    and RssShmem (SQLite's WAL index), from /proc/PID/status, in MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "RssShmem"):
                out[name.lower().replace("rss", "rss_") + "_mib"] = round(int(value.split()[0]) / 1024, 1)
    return out


def files_mib(data_dir: Path, names: tuple[str, ...]) -> float:
    return sum(f.stat().st_size for n in names if (f := data_dir / n).exists()) / 2**20


def sample_rss(proc: psutil.Process, data_dir: Path, t0: float, every: float, stop: threading.Event,
               tally: Tally, out: list[dict[str, Any]]) -> None:
    """Every `every` seconds: the server's RSS, the job store's size on disk (SQLite's page cache
    grows with it, up to its cache_size) and the requests and errors so far; a line a minute."""
    printed = 0.0
    while not stop.is_set():
        with tally.lock:
            requests = sum(tally.requests.values())
            errors = sum(tally.errors.values())
        try:
            s = {"t": round(time.monotonic() - t0, 1), "rss_mib": round(rss_mib(proc), 1), **memory_kinds(proc.pid),
                 "store_mib": round(files_mib(data_dir, ("openarts.db", "openarts.db-wal")), 1),
                 "security_db_mib": round(files_mib(data_dir, ("security.db", "security.db-wal")), 1),
                 "requests": requests, "errors": errors}
        except psutil.Error:
            return
        out.append(s)
        if s["t"] - printed >= 60:
            printed = s["t"]
            print(f"  {s['t']:6.0f} s  RSS {s['rss_mib']:6.1f} MiB  store {s['store_mib']:6.1f} MiB  "
                  f"{requests:,} requests  {errors} errors", flush=True)
        stop.wait(every)


def terminate_leftovers(sdk: Any, tally: Tally) -> int:
    """Terminate what is still running or queued (the shared job and the queue's blocker; any other
    would be a job a client failed to terminate) and wait until nothing is."""
    from huaweicloudsdkmodelarts.v1 import ListTrainingJobsRequest, StopTrainingJobRequest

    stopped: set[str] = set()
    body = {"limit": 50, "offset": 0, "filters": [{"key": "phase", "operator": "in",
                                                    "value": ["Creating", "Pending", "Running"]}]}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        items = sdk.list_training_jobs(ListTrainingJobsRequest(body=body)).items
        if not items:
            break
        for item in items:
            if item.metadata.id in stopped:  # asked already (the same request twice in a second is a replay)
                continue
            stopped.add(item.metadata.id)
            try:
                sdk.stop_training_job(StopTrainingJobRequest(training_job_id=item.metadata.id,
                                                            body={"action_type": "terminate"}))
            except Exception as exc:  # it may have ended meanwhile
                tally.error("terminate (cleanup)", exc)
        time.sleep(0.5)
    else:
        tally.error("terminate (cleanup)", TimeoutError("jobs still running 120 s after the soak"))
    return len(stopped)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0, help="how long the clients run (default 15)")
    ap.add_argument("--clients", type=int, default=32, help="SDK client threads on the one key (default 32)")
    ap.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period (default 5)")
    ap.add_argument("--poll-seconds", type=float, default=0.25,
                    help="how often a client reads its job while waiting for a phase (default 0.25)")
    ap.add_argument("--name", default="soak", help="result name: bench/results/NAME.json")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1 or args.sample_seconds <= 0 or args.poll_seconds <= 0:
        ap.error("--minutes, --sample-seconds and --poll-seconds must be > 0, --clients >= 1")

    tally = Tally()
    samples: list[dict[str, Any]] = []
    with temp_data_dir(args.name) as data_dir:
        data_dir.mkdir(parents=True)
        ak, sk = create_key(data_dir)
        server = BenchServer(data_dir, args.name, config=CONFIG + SECURITY).start()
        try:
            with MachineLoad() as load:
                proc = server.process()
                main_sdk = sdk_client(server.url, ak, sk)
                first = Client(-1, server.url, ak, sk, "", tally)
                hot = first.create("shared")  # read by every client
                blocker = first.create("blocker", QUEUE_POOL)  # fills the queue pool: queued jobs wait
                if hot is None or blocker is None:
                    raise RuntimeError(f"cannot create a job: {tally.examples}")
                clients = [Client(i, server.url, ak, sk, hot, tally, args.poll_seconds) for i in range(args.clients)]
                rss_start = rss_mib(proc)
                print(f"soak: {args.clients} SDK clients on one access key for {args.minutes:g} min against "
                      f"{server.url} (server pid {server.pid}, RSS {rss_start:.1f} MiB)", flush=True)
                t0 = time.monotonic()
                until = t0 + args.minutes * 60
                stop = threading.Event()
                sampler = threading.Thread(target=sample_rss, args=(proc, data_dir, t0, args.sample_seconds, stop,
                                                                    tally, samples), daemon=True)
                sampler.start()
                threads = [threading.Thread(target=c.run, args=(until,), name=f"soak-{c.index}") for c in clients]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                seconds = time.monotonic() - t0
                stop.set()
                sampler.join()
                leftovers = terminate_leftovers(main_sdk, tally)
                rss_end = rss_mib(proc)
                cpu = server.cpu_seconds()
                machine_load = load.result()
        finally:
            server.stop()

    series = [(s["t"], s["rss_mib"]) for s in samples]
    level = levelled_off(series)
    requests = sum(tally.requests.values())
    errors = sum(tally.errors.values())
    jobs = sum(tally.jobs.values())
    out = {
        "minutes": args.minutes, "clients": args.clients, "seconds": round(seconds, 1),
        "requests": requests, "requests_per_second": round(requests / seconds, 1),
        "requests_by_operation": dict(tally.requests), "errors": errors, "errors_by_kind": dict(tally.errors),
        "error_examples": tally.examples, "jobs": jobs, "jobs_by_kind": dict(tally.jobs),
        "leftover_jobs_terminated": leftovers, "server_cpu_seconds": cpu,
        "rss_start_mib": round(rss_start, 1), "rss_end_mib": round(rss_end, 1),
        "rss_max_mib": round(max((r for _, r in series), default=rss_end), 1), "rss": level,
        "rss_series": samples, "machine_load": machine_load,
    }
    path = write_result(args.name, out)
    print()
    print(table(["operation", "requests"], sorted(tally.requests.items(), key=lambda kv: -kv[1])))
    if errors:
        print()
        print(table(["error kind", "count", "example"],
                    [(k, n, tally.examples.get(k, "")[:100]) for k, n in tally.errors.most_common()]))
    print()
    print(f"RSS: {rss_start:.1f} MiB at the start, {out['rss_max_mib']} MiB at most, {rss_end:.1f} MiB at the end; "
          f"middle third max {level.get('max_middle_third_mib')} MiB, last third max "
          f"{level.get('max_last_third_mib')} MiB -> {'levelled off' if level['levelled_off'] else 'STILL GROWING'}")
    ok = errors == 0 and bool(level["levelled_off"])
    result_line("soak", f"{requests:,} requests ({out['requests_per_second']}/s), {jobs:,} jobs, {errors} errors, "
                f"RSS {rss_start:.0f} -> {rss_end:.0f} MiB (max {out['rss_max_mib']}), "
                f"{'levelled off' if level['levelled_off'] else 'not levelled off'}; {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
