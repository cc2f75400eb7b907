"""Chaos run: many jobs with random failures and fault-tolerance policies, while the server is killed
with SIGKILL every few seconds and started again on the same data directory.

    .venv/bin/python bench/chaos.py [--jobs 100] [--seed 1] [--kill-every 3] [--timeout 480]

Each job gets one behaviour and one policy, drawn from the seed:

    ok       sleeps a random short time and exits 0
    flaky    one task exits K on its first N attempts, then the job succeeds
    always   one task exits K on every attempt
    hang     every task sleeps silently on its first H attempts (MA_HANG_DETECT_TIME of 1.8 or 3 s)
    killed   task worker-0 sleeps on its first M attempts and this script SIGKILLs its process group
             from outside (an infrastructure fault: OOM killer, an operator)

and maybe a straggler (`sleep 60 &` in the worker's process group, which must die with the attempt),
node_count 1 or 2, and the annotations fault-tolerance/job-retry-num (absent or 1-3),
job-unconditional-retry and hang-retry. The behaviour is a function of the attempt number, which the
command reads from the path of its own log (DATA/jobs/ID/attempts/SEQ/TASK/log), so an attempt that a
server crash interrupted while it was being spawned (and that the next server discards and spawns again
with the same number) behaves the same way. Every run of the command also appends "SEQ TASK PID" to a
per-job counter file outside the data directory, so runs can be counted.

For each job the expected final phase and running records follow from the policy, modelled on
core/faults.py (the "budget" is job-retry-num, or 3 when unconditional retry is set without a number):

    - a user exit (1-128) is retried only with unconditional retry, while retries_used < budget;
    - a hang with hang-retry restarts in place up to 3 times in a row without using the budget;
      otherwise a hang is retried while retries_used < budget;
    - an outside SIGKILL (exit 137) is retried while retries_used < budget;
    - every counted retry resets the run of hang restarts.

The "budget" rule is the code's (FaultPolicy.budget): unconditional retry without a number also
gives hangs and outside kills 3 retries, not only user exits.

At the end the script prints one row per job and a summary line; it exits 0 only when no job is lost
(never final), duplicated (more running records or attempt directories than the policy allows, a run of
the command the records do not explain, or two live process groups for one task) or orphaned (a
process still alive in the process group of a final job's worker, 2 s after the job was seen final, or
after everything is final). Outcome mismatches (phase, end reasons, recovery fields) and misnumbered
jobs (the last attempt's number, task_ips[].schedule_count, is not the number of running records) are
reported too and also make the exit code non-zero.

Server kills: every --kill-every seconds on average (0.5x to 1.5x; every 4th interval at least 5 s, so
that a server lives long enough to see a hang: its hang windows start afresh at each start), and one
restart in five is itself killed 0.5-1.8 s after it was spawned, during its start-up pass.

The server runs a copy of the code taken at the start (--source: the working tree's src/openarts, or
a git revision read with `git archive`), so that restarts do not pick up half-made edits.

Everything it starts (the server, the workers, their shims) is killed on exit, also on Ctrl-C; it talks
to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

PROJECT = "0123456789abcdef0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent
FLAVOR = "chaos.1u"
FINAL = ("Completed", "Failed", "Terminated", "Abnormal")
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONFIG = f"""
[server]
terminate_grace_seconds = 1
metrics_interval_seconds = 0.5
reconcile_interval_seconds = 0.3

[[nodes]]
name = "chaos"
cpu_cores = 16
memory_gb = 64

[[flavors]]
flavor_id = "{FLAVOR}"
cpu_cores = 1
memory_gb = 1
"""

UNCONDITIONAL_DEFAULT_RETRIES = 3  # core/faults.py: unconditional retry with no job-retry-num
MAX_HANG_RESTARTS = 3  # core/faults.py: consecutive hang restarts under hang-retry
SIGKILL_REASON = "exit with 137 (killed by SIGKILL)"
HANG_REASON = "task hung"  # prefix of the end_reason
COMPLETED_REASON = "job completed"
DISCARD_EVENT = "Discarded an attempt"
SETTLE_SECONDS = 3.0  # after every job is final: watch that nothing restarts and nothing survives


# -- one job: behaviour, policy, expected outcome ---------------------------------------------------


@dataclass
class Plan:
    idx: int
    name: str
    behaviour: str  # ok | flaky | always | hang | killed
    nodes: int
    retry_num: int  # 0: annotation absent
    unconditional: bool
    hang_retry: bool
    bad: int = 0  # attempts that misbehave: flaky N, hang H, killed M; always: every attempt
    exit_code: int = 0
    bad_task: int = 0  # the task that exits K (flaky, always) or is killed (killed)
    sleep: float = 0.5
    straggler: bool = False
    hang_minutes: str = ""
    kill_delay: float = 1.0
    counter: Path = Path("/nonexistent")  # runs of the command: "SEQ TASK PID" lines
    job_id: str = ""
    submitted: bool = False
    uncertain: bool = False  # a create request failed: it may or may not have been committed

    # -- the request ---------------------------------------------------------------------------
    def annotations(self) -> dict[str, str]:
        ann = {}
        if self.retry_num:
            ann["fault-tolerance/job-retry-num"] = str(self.retry_num)
        if self.unconditional:
            ann["fault-tolerance/job-unconditional-retry"] = "true"
        if self.hang_retry:
            ann["fault-tolerance/hang-retry"] = "true"
        return ann

    def command(self) -> str:
        # The attempt number comes from the worker's own log path: .../attempts/SEQ/TASK/log.
        head = ('seq=$(readlink /proc/$$/fd/1); seq=${seq%/*/log}; seq=${seq##*/}; '
                'case "$seq" in ""|*[!0-9]*) echo "chaos: no attempt number"; exit 99;; esac; '
                f'echo "$seq $VC_TASK_INDEX $$" >> "{self.counter}"; ')
        if self.straggler:
            head += "sleep 60 </dev/null >/dev/null 2>&1 & "
        s = f"{self.sleep:.2f}"
        if self.behaviour == "ok":
            body = f'echo "attempt $seq working"; sleep {s}; echo done'
        elif self.behaviour in ("flaky", "always"):
            bad = 1_000_000 if self.behaviour == "always" else self.bad
            body = (f'if [ "$VC_TASK_INDEX" = {self.bad_task} ] && [ "$seq" -le {bad} ]; then '
                    f'echo "attempt $seq failing on purpose"; sleep {s}; exit {self.exit_code}; fi; '
                    f'sleep {self.sleep + 0.5:.2f}; echo done')
        elif self.behaviour == "hang":
            body = (f'if [ "$seq" -le {self.bad} ]; then echo "attempt $seq will hang"; sleep 600; exit 0; fi; '
                    'echo "attempt $seq fine"')
        elif self.behaviour == "killed":
            body = (f'if [ "$seq" -le {self.bad} ]; then echo "attempt $seq waiting to be killed"; sleep 300; '
                    f'exit 0; fi; sleep {s}; echo done')
        else:
            raise ValueError(self.behaviour)
        return head + body

    def body(self) -> dict[str, Any]:
        algorithm: dict[str, Any] = {"command": self.command()}
        if self.hang_minutes:
            algorithm["environments"] = {"MA_HANG_DETECT_TIME": self.hang_minutes}
        return {
            "kind": "job",
            "metadata": {"name": self.name, "description": f"chaos {self.describe()}",
                         "annotations": self.annotations()},
            "algorithm": algorithm,
            "spec": {"resource": {"flavor_id": FLAVOR, "node_count": self.nodes}},
        }

    # -- what it should do -----------------------------------------------------------------------
    def attempt_kind(self, seq: int) -> str:
        """How attempt `seq` ends: completed | user_exit | signaled | hang."""
        if self.behaviour == "always" or (self.behaviour == "flaky" and seq <= self.bad):
            return "user_exit"
        if self.behaviour == "hang" and seq <= self.bad:
            return "hang"
        if self.behaviour == "killed" and seq <= self.bad:
            return "signaled"
        return "completed"

    def reason(self, kind: str) -> str:
        return {"completed": COMPLETED_REASON, "user_exit": f"exit with {self.exit_code}",
                "signaled": SIGKILL_REASON, "hang": HANG_REASON}[kind]

    def expected(self) -> tuple[str, list[str]]:
        """The final phase and the end_reason of every running record."""
        budget = self.retry_num or (UNCONDITIONAL_DEFAULT_RETRIES if self.unconditional else 0)
        retries_used = hang_restarts = 0
        reasons: list[str] = []
        seq = 1
        while seq < 100:
            kind = self.attempt_kind(seq)
            reasons.append(self.reason(kind))
            if kind == "completed":
                return "Completed", reasons
            seq += 1
            if kind == "hang" and self.hang_retry and hang_restarts < MAX_HANG_RESTARTS:
                hang_restarts += 1
                continue
            retryable = kind in ("signaled", "hang") or (kind == "user_exit" and self.unconditional)
            if not retryable or retries_used >= budget:
                return "Failed", reasons
            retries_used += 1
            hang_restarts = 0
        raise AssertionError("unbounded retries")

    def runs(self) -> list[str]:
        try:
            return self.counter.read_text().splitlines()
        except OSError:
            return []

    def describe(self) -> str:
        b = self.behaviour
        if b == "ok":
            text = f"ok {self.sleep:.1f}s"
        elif b == "flaky":
            text = f"flaky {self.bad}x exit {self.exit_code} @w{self.bad_task}"
        elif b == "always":
            text = f"always exit {self.exit_code} @w{self.bad_task}"
        elif b == "hang":
            text = f"hang {self.bad}x {self.hang_minutes}m"
        else:
            text = f"killed {self.bad}x @w{self.bad_task}"
        return text + ("+bg" if self.straggler else "")

    def policy(self) -> str:
        parts = [f"rn={self.retry_num}"] if self.retry_num else []
        if self.unconditional:
            parts.append("uc")
        if self.hang_retry:
            parts.append("hr")
        return ",".join(parts) or "-"


def make_plans(n: int, seed: int, counters: Path) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for i in range(n):
        behaviour = rng.choices(["ok", "flaky", "always", "hang", "killed"], weights=[25, 25, 10, 20, 20])[0]
        nodes = 2 if rng.random() < 0.3 else 1
        plan = Plan(
            idx=i, name=f"chaos-{seed}-{i:03d}", behaviour=behaviour, nodes=nodes,
            retry_num=0 if rng.random() < 0.4 else rng.randint(1, 3),
            unconditional=rng.random() < 0.45,
            hang_retry=rng.random() < (0.6 if behaviour == "hang" else 0.2),
            sleep=round(rng.uniform(0.2, 2.5), 2),
            straggler=rng.random() < 0.25,
            bad_task=rng.randrange(nodes),
            exit_code=rng.choice([1, 2, 3, 7, 42, 127]),
            counter=counters / f"{i:03d}.log",
        )
        if behaviour == "flaky":
            plan.bad = rng.choice([1, 1, 2, 3])
        elif behaviour == "hang":
            plan.bad = rng.choice([1, 1, 1, 2, 4])  # 4: one more than hang-retry's 3 restarts in a row
            plan.hang_minutes = rng.choice(["0.03", "0.05"])
        elif behaviour == "killed":
            plan.bad = rng.choice([1, 1, 2])
            plan.bad_task = 0
            plan.kill_delay = round(rng.uniform(0.3, 2.0), 2)
        plans.append(plan)
    return plans


# -- processes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    state: str
    pgrp: int


def processes() -> dict[int, Proc]:
    """Every process that is not a zombie, from /proc (pid, state, process group)."""
    out: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if len(fields) < 3 or fields[0] in ("Z", "X"):
            continue
        out[int(entry.name)] = Proc(int(entry.name), fields[0], int(fields[2]))
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _git(*args: str) -> str:
    return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def snapshot_source(dest: Path, rev: str) -> str:
    """Copy the server's code to dest/openarts, so that every restart runs the same code even while someone
    edits the working tree: src/openarts as it is now (rev "worktree") or as committed in a git revision
    (read with `git archive`, which writes nothing in the repository). Returns a description of it."""
    if rev == "worktree":
        shutil.copytree(REPO / "src" / "openarts", dest / "openarts", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        dest.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", f"{rev}:src", "openarts"],
                             capture_output=True, timeout=60, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True, timeout=60)
    digest = hashlib.sha256()
    for f in sorted((dest / "openarts").rglob("*.py")):
        digest.update(str(f.relative_to(dest)).encode() + b"\0" + f.read_bytes())
    desc = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if rev == "worktree":
            changed = len(_git("status", "--porcelain", "--", "src").splitlines())
            head = _git("rev-parse", "--short", "HEAD").strip()
            desc = f"working tree: git {head} + {changed} changed file(s) in src/"
        else:
            desc = f"git {_git('rev-parse', '--short', rev).strip()} ({rev})"
    return f"{desc}, sha256 {digest.hexdigest()[:12]}"


class Server:
    """`openarts serve --port 0` on a fixed data directory; kill9() and start() again at will. It runs
    the snapshot of the source in `source` (PYTHONPATH), not the live working tree."""

    def __init__(self, root: Path, data_dir: Path, config: Path, source: Path) -> None:
        self.data_dir = data_dir
        self.config = config
        self.source = source
        self.log_path = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.start_seconds: list[float] = []
        self._t0 = 0.0

    @property
    def api(self) -> str:
        return f"{self.url}/v2/{PROJECT}"

    def spawn(self) -> None:
        self._t0 = time.monotonic()
        (self.data_dir / "server.json").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARTS_")}
        env["PATH"] = PLAIN_PATH
        env["PYTHONPATH"] = str(self.source)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        with self.log_path.open("ab") as log:
            log.write(f"---- chaos: server start at {dt.datetime.now().isoformat()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openarts.cli.main", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--data-dir", str(self.data_dir), "--config", str(self.config), "--log-level", "warning"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            )

    def start(self, timeout: float = 60.0) -> None:
        """Spawn the server and wait until /health answers."""
        self.spawn()
        assert self.proc is not None
        t0 = self._t0
        info = self.data_dir / "server.json"
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
                self.url = json.loads(info.read_text())["url"]
                if not self.url.startswith("http://127.0.0.1:"):
                    raise RuntimeError(f"server is not on 127.0.0.1: {self.url}")
                if httpx.get(f"{self.url}/health", timeout=2, trust_env=False).status_code == 200:
                    self.start_seconds.append(time.monotonic() - t0)
                    return
            time.sleep(0.02)
        raise RuntimeError(f"server not healthy after {timeout}s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# -- watching the workers --------------------------------------------------------------------------

Owner = tuple[str, int, str]  # job id, attempt, task


@dataclass
class Watch:
    """What the script sees of the workers on its own, outside the API: every process group a shim
    recorded, groups alive at once for one task, processes left in final jobs' groups."""

    jobs_dir: Path
    owners: dict[int, Owner] = field(default_factory=dict)  # worker pgid -> owner (latest seen)
    first_seen: dict[tuple[Owner, int], float] = field(default_factory=dict)
    killed: dict[int, Owner] = field(default_factory=dict)  # outside SIGKILLs: pgid -> owner
    double: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, task) -> consecutive scans
    doubles: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # persistent ones, described
    transient_doubles: int = 0
    final_since: dict[str, float] = field(default_factory=dict)  # job id -> when the script saw it final
    orphans: dict[int, tuple[str, str]] = field(default_factory=dict)  # pid -> (job id, description)
    _orphan_seen: dict[int, float] = field(default_factory=dict)

    def scan_pid_files(self, job_ids: set[str]) -> None:
        now = time.monotonic()
        for job_id in job_ids:
            base = self.jobs_dir / job_id / "attempts"
            with contextlib.suppress(OSError):
                for seq_dir in os.scandir(base):
                    if not seq_dir.name.isdigit():
                        continue
                    for task_dir in os.scandir(seq_dir.path):
                        pgid = read_int(Path(task_dir.path) / "worker.pid")
                        if pgid is None:
                            continue
                        owner = (job_id, int(seq_dir.name), task_dir.name)
                        self.owners[pgid] = owner
                        self.first_seen.setdefault((owner, pgid), now)

    def kill_outside(self, plans: dict[str, Plan], procs: dict[int, Proc]) -> None:
        """SIGKILL worker-0 of a `killed` job's first M attempts, kill_delay after it appeared. A
        respawn of the same attempt (after a discarded start) gets a new group and is killed too."""
        now = time.monotonic()
        for (owner, pgid), seen in list(self.first_seen.items()):
            job_id, seq, task = owner
            plan = plans.get(job_id)
            if (plan is None or plan.behaviour != "killed" or seq > plan.bad or task != f"worker-{plan.bad_task}"
                    or pgid in self.killed or now - seen < plan.kill_delay):
                continue
            leader = procs.get(pgid)
            run_dir = self.jobs_dir / job_id / "attempts" / str(seq) / task
            if leader is None or leader.pgrp != pgid or (run_dir / "exit").exists():
                continue
            if f"{seq} {plan.bad_task} {pgid}" not in plan.runs():  # not our command (yet)
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                self.killed[pgid] = owner

    def check_live(self, procs: dict[int, Proc], final: set[str]) -> None:
        now = time.monotonic()
        live_groups = {p.pgrp for p in procs.values()}
        by_task: dict[tuple[str, str], list[int]] = defaultdict(list)
        for pgid in live_groups:
            owner = self.owners.get(pgid)
            if owner is not None:
                by_task[(owner[0], owner[2])].append(pgid)
        for key in list(self.double):
            if len(by_task.get(key, ())) < 2 and self.double.pop(key) == 1:
                self.transient_doubles += 1
        for key, groups in by_task.items():
            if len(groups) < 2:
                continue
            self.double[key] = self.double.get(key, 0) + 1
            if self.double[key] >= 2:  # still there one scan later: not a kill in flight
                desc = [f"pgid {g} (attempt {self.owners[g][1]})" for g in sorted(groups)]
                self.doubles.setdefault(key, desc)
        # processes in a final job's groups, alive 2 s after the script saw the job final
        for p in procs.values():
            owner = self.owners.get(p.pgrp)
            if owner is None or owner[0] not in final:
                continue
            if now - self.final_since.get(owner[0], now) < 2.0:
                continue
            first = self._orphan_seen.setdefault(p.pid, now)
            if now - first >= 1.0 and p.pid not in self.orphans:
                self.orphans[p.pid] = (owner[0], f"pid {p.pid} in group {p.pgrp} (attempt {owner[1]} "
                                                 f"{owner[2]}): {cmdline(p.pid)[:80]}")


# -- HTTP ------------------------------------------------------------------------------------------


def all_jobs(client: httpx.Client, api: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    body: dict[str, Any] = {"limit": 50, "sort_by": "create_time", "order": "asc"}
    while True:
        body["offset"] = len(out)
        r = client.post(f"{api}/training-job-searches", json=body)
        r.raise_for_status()
        items = r.json()["items"]
        out.extend(items)
        if len(items) < 50:
            return out


def events(client: httpx.Client, api: str, job_id: str) -> list[dict[str, Any]]:
    r = client.get(f"{api}/training-jobs/{job_id}/events", params={"limit": 1000})
    r.raise_for_status()
    return list(r.json()["events"])


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Result:
    plan: Plan
    exp_phase: str
    exp_reasons: list[str]
    phase: str = "-"
    secondary: str = "-"
    reasons: list[str] = field(default_factory=list)
    dirs: int = 0
    runs: int = 0
    discards: int = 0
    problems: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    mismatch: bool = False
    lost: bool = False
    duplicated: bool = False
    orphaned: bool = False
    misnumbered: bool = False
    last_seq: int = 0

    @property
    def verdict(self) -> str:
        flags = [name for name, on in (("LOST", self.lost), ("DUP", self.duplicated), ("ORPHAN", self.orphaned),
                                       ("MISMATCH", self.mismatch), ("GAP", self.misnumbered)) if on]
        return ",".join(flags) or "ok"


def reasons_match(expected: list[str], actual: list[str]) -> bool:
    if len(expected) != len(actual):
        return False
    return all(a.startswith(HANG_REASON) if e == HANG_REASON else a == e for e, a in zip(expected, actual, strict=True))


def evaluate(plan: Plan, doc: dict[str, Any] | None, evs: list[dict[str, Any]], watch: Watch,
             jobs_dir: Path) -> Result:
    exp_phase, exp_reasons = plan.expected()
    res = Result(plan, exp_phase, exp_reasons, events=evs)
    if doc is None:
        res.lost = True
        res.problems.append("never submitted" if not plan.job_id else "job document missing")
        return res
    status = doc["status"]
    records = status.get("running_records", [])
    res.phase, res.secondary = status["phase"], status["secondary_phase"]
    res.reasons = [str(r.get("end_reason", "")) for r in records]
    res.discards = sum(1 for e in evs if str(e["message"]).startswith(DISCARD_EVENT))
    if res.phase not in FINAL:
        res.lost = True
        res.problems.append(f"not final: {res.phase}, {len(records)} record(s)")
    else:
        if res.phase != exp_phase or res.secondary != exp_phase:
            res.mismatch = True
            res.problems.append(f"phase {res.phase}/{res.secondary}, expected {exp_phase}")
        if len(records) > len(exp_reasons):
            res.duplicated = True
            res.problems.append(f"{len(records)} running records, the policy allows {len(exp_reasons)}")
        if not reasons_match(exp_reasons, res.reasons):
            res.mismatch = True
            res.problems.append(f"end reasons {res.reasons}, expected {exp_reasons}")
        if records and any(not r.get("end_recover") for r in records[:-1]):
            res.mismatch = True
            res.problems.append("a record before the last has no end_recover")
        if records and records[-1].get("end_recover"):
            res.mismatch = True
            res.problems.append(f"the last record has end_recover={records[-1]['end_recover']}")
    # Attempt numbers: the records carry none, but task_ips[].schedule_count is the last attempt's number
    # and the attempt directories are numbered. Records 1..N should be attempts 1..N.
    last_seq = max((int(t.get("schedule_count", 0)) for t in status.get("task_ips", [])), default=len(records))
    res.last_seq = last_seq
    if last_seq != len(records):
        res.misnumbered = True
        res.problems.append(f"{len(records)} running record(s) but the last attempt is number {last_seq} "
                            "(task_ips schedule_count): attempt numbers skip")
    for i, r in enumerate(records[:-1]):
        rec = (r.get("recover_records") or [{}])[-1]
        if r.get("end_recover") and "recover_result" not in rec:
            res.mismatch = True
            res.problems.append(f"record {i + 1} ({r.get('end_recover')}): its recover record has no "
                                f"recover_result although record {i + 2} started")
    attempts = jobs_dir / plan.job_id / "attempts"
    seqs: list[int] = []
    with contextlib.suppress(OSError):
        seqs = sorted(int(p.name) for p in attempts.iterdir() if p.name.isdigit())
    res.dirs = len(seqs)
    if res.dirs > len(records):
        res.problems.append(f"attempt directories {seqs} for {len(records)} running record(s)")
        if max(seqs, default=0) > last_seq or res.dirs > len(records) + res.discards:
            res.duplicated = True
    # runs of the command: one per task per attempt, plus those of attempts discarded while starting
    lines = plan.runs()
    res.runs = len(lines)
    per: Counter[tuple[int, str]] = Counter()
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            per[(int(parts[0]), parts[1])] += 1
    for (seq, task), n in sorted(per.items()):
        if seq > last_seq:
            res.duplicated = True
            res.problems.append(f"the command ran for attempt {seq} (task {task}), after the last attempt {last_seq}")
        elif n > 1 + res.discards:
            res.duplicated = True
            res.problems.append(f"the command ran {n} times for attempt {seq} task {task} "
                                f"({res.discards} discarded start(s))")
    for (job_id, task), desc in watch.doubles.items():
        if job_id == plan.job_id:
            res.duplicated = True
            res.problems.append(f"two live process groups for {task}: {', '.join(desc)}")
    for job_id, what in watch.orphans.values():
        if job_id == plan.job_id:
            res.orphaned = True
            res.problems.append(f"orphan: {what}")
    return res


def fmt_table(results: list[Result], only_problems: bool) -> str:
    headers = ["#", "behaviour", "n", "policy", "expected", "actual", "recs e/a", "dirs", "runs", "verdict"]
    rows = []
    for r in results:
        if only_problems and r.verdict == "ok":
            continue
        rows.append([str(r.plan.idx), r.plan.describe(), str(r.plan.nodes), r.plan.policy(), r.exp_phase,
                     r.phase if r.secondary in (r.phase, "-") else f"{r.phase}/{r.secondary}",
                     f"{len(r.exp_reasons)}/{len(r.reasons)}", str(r.dirs), str(r.runs), r.verdict])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


class Chaos:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True)
        config = root / "chaos.toml"
        config.write_text(CONFIG)
        self.source = snapshot_source(root / "src", args.source)
        self.server = Server(root, self.data_dir, config, root / "src")
        self.watch = Watch(self.data_dir / "jobs")
        counters = root / "counters"  # outside the data directory
        counters.mkdir()
        self.plans = make_plans(args.jobs, args.seed, counters)
        self.rng = random.Random(args.seed + 1)
        self.kills = 0
        self.startup_kills = 0  # kills of a server still in its start-up pass
        self.interval_count = 0
        self.submit_retries = 0
        self.docs: dict[str, dict[str, Any]] = {}  # job id -> latest document

    # cleanup: the server, every worker group ever seen or on disk, every shim of this data dir
    def cleanup(self) -> None:
        self.server.kill9()
        groups = set(self.watch.owners)
        with contextlib.suppress(OSError):
            for pid_file in self.watch.jobs_dir.glob("*/attempts/*/*/worker.pid"):
                pgid = read_int(pid_file)
                if pgid:
                    groups.add(pgid)
        marker = str(self.data_dir)
        for p in processes().values():
            if p.pid != os.getpid() and "openarts-shim" in cmdline(p.pid) and marker in cmdline(p.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, signal.SIGKILL)
        for pgid in groups:
            if pgid > 1 and pgid != os.getpgid(0):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)

    def kill_interval(self) -> float:
        # Hang detection keeps progress times in memory: after a restart a task's hang window starts
        # afresh, so a hang is only seen by a server that stays up longer than the window (up to 3 s
        # here) plus a sample and a pass. Every 4th interval is therefore at least 5 s.
        self.interval_count += 1
        base = float(self.args.kill_every) * self.rng.uniform(0.5, 1.5)
        return max(base, 5.0) if self.interval_count % 4 == 0 else base

    def submit(self, client: httpx.Client, batch: int) -> None:
        todo = [p for p in self.plans if not p.submitted][:batch]
        if any(p.uncertain for p in todo):  # a failed create may have been committed: look it up by name
            try:
                by_name = {j["metadata"]["name"]: j["metadata"]["id"] for j in all_jobs(client, self.server.api)}
            except (httpx.HTTPError, ValueError, KeyError):
                return
            for p in todo:
                if p.uncertain and p.name in by_name:
                    p.job_id, p.submitted, p.uncertain = by_name[p.name], True, False
        for p in todo:
            if p.submitted:
                continue
            try:
                r = client.post(f"{self.server.api}/training-jobs", json=p.body())
            except httpx.HTTPError:
                p.uncertain = True
                self.submit_retries += 1
                return
            if r.status_code != 201:
                raise RuntimeError(f"create {p.name}: {r.status_code} {r.text[:500]}")
            p.job_id, p.submitted, p.uncertain = r.json()["metadata"]["id"], True, False

    def poll(self, client: httpx.Client) -> bool:
        try:
            docs = all_jobs(client, self.server.api)
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        now = time.monotonic()
        for d in docs:
            job_id = d["metadata"]["id"]
            self.docs[job_id] = d
            if d["status"]["phase"] in FINAL:
                self.watch.final_since.setdefault(job_id, now)
        return True

    def final_ids(self) -> set[str]:
        return {j for j, d in self.docs.items() if d["status"]["phase"] in FINAL}

    def all_final(self) -> bool:
        return all(p.submitted for p in self.plans) and all(
            p.job_id in self.docs and self.docs[p.job_id]["status"]["phase"] in FINAL for p in self.plans)

    def tick(self) -> None:
        ids = {p.job_id for p in self.plans if p.job_id}
        self.watch.scan_pid_files(ids)
        procs = processes()
        by_id = {p.job_id: p for p in self.plans if p.job_id}
        self.watch.kill_outside(by_id, procs)
        self.watch.check_live(processes(), self.final_ids())

    def run(self) -> int:
        args = self.args
        t0 = time.monotonic()
        deadline = t0 + args.timeout - 25  # leave time for the final checks and the report
        print(f"chaos: {args.jobs} jobs, seed {args.seed}, kill -9 every ~{args.kill_every}s, "
              f"data in {self.data_dir}", flush=True)
        print(f"machine: {machine()}", flush=True)
        print(f"server code: {self.source}", flush=True)
        behaviours = Counter(p.behaviour for p in self.plans)
        print("behaviours: " + ", ".join(f"{k} {v}" for k, v in sorted(behaviours.items())), flush=True)
        self.server.start()
        next_kill = time.monotonic() + self.kill_interval()
        last_poll = last_report = 0.0
        all_final_at: float | None = None
        with httpx.Client(timeout=5, trust_env=False) as client:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if all_final_at is None and now >= next_kill:
                    self.server.kill9()
                    self.kills += 1
                    self.tick()  # the workers outlive the server: keep watching them
                    time.sleep(self.rng.uniform(0.0, 0.5))
                    if self.rng.random() < 0.2:  # now and then, kill the next one during its start-up pass
                        self.server.spawn()
                        time.sleep(self.rng.uniform(0.5, 1.8))
                        if self.server.alive():
                            self.server.kill9()
                            self.kills += 1
                            self.startup_kills += 1
                    self.server.start()
                    next_kill = time.monotonic() + self.kill_interval()
                self.submit(client, batch=10)
                self.tick()
                if now - last_poll >= 0.5 and self.poll(client):
                    last_poll = now
                    if all_final_at is None and self.all_final():
                        all_final_at = time.monotonic()
                        print(f"[{now - t0:5.1f}s] every job is final; watching {SETTLE_SECONDS:g}s more", flush=True)
                if all_final_at is not None and time.monotonic() - all_final_at >= SETTLE_SECONDS:
                    break
                if now - last_report >= 15:
                    last_report = now
                    phases = Counter(d["status"]["phase"] for d in self.docs.values())
                    print(f"[{now - t0:5.1f}s] kills {self.kills}, outside kills {len(self.watch.killed)}, "
                          f"submitted {sum(p.submitted for p in self.plans)}, "
                          + ", ".join(f"{k} {v}" for k, v in sorted(phases.items())), flush=True)
                time.sleep(0.15)
            if not self.server.alive():
                self.server.start()
            # final look: documents, events; workers once more (all final: every leftover is an orphan)
            for _ in range(20):
                if self.poll(client):
                    break
                time.sleep(0.5)
            end = time.monotonic()
            while time.monotonic() - end < 3.5 and all_final_at is not None:
                self.tick()
                time.sleep(0.25)
            results = []
            for p in self.plans:
                doc = self.docs.get(p.job_id)
                evs: list[dict[str, Any]] = []
                if p.job_id:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        evs = events(client, self.server.api, p.job_id)
                results.append(evaluate(p, doc, evs, self.watch, self.watch.jobs_dir))
        elapsed = time.monotonic() - t0
        return self.report(results, elapsed)

    def report(self, results: list[Result], elapsed: float) -> int:
        args = self.args
        print()
        print(fmt_table(results, args.only_problems))
        print()
        for r in results:
            if r.problems:
                print(f"job {r.plan.idx} {r.plan.name} {r.plan.job_id} [{r.plan.describe()}; {r.plan.policy()}; "
                      f"nodes {r.plan.nodes}]:")
                for line in r.problems:
                    print(f"    {line}")
                for e in r.events[-40:]:
                    stamp = dt.datetime.fromtimestamp(int(e["time"]) / 1000).strftime("%H:%M:%S.%f")[:-3]
                    print(f"      {stamp} {e.get('source', '')}: {e['message']}".rstrip()[:200])
        mismatched = sum(r.mismatch for r in results)
        misnumbered = sum(r.misnumbered for r in results)
        lost = sum(r.lost for r in results)
        duplicated = sum(r.duplicated for r in results)
        orphaned = len(self.watch.orphans)
        discards = sum(r.discards for r in results)
        phases = Counter(r.phase for r in results)
        attempts = sum(len(r.reasons) for r in results)
        error_lines: list[str] = []
        with contextlib.suppress(OSError):
            error_lines = [line for line in self.server.log_path.read_text(errors="replace").splitlines()
                           if " ERROR " in line or line.startswith(("Traceback", "ERROR"))]
        server_errors = len(error_lines)
        for line in error_lines[:10]:
            print(f"server log: {line[:200]}")
        starts = self.server.start_seconds
        mean_start = sum(starts) / max(len(starts), 1)
        print(f"server: {self.kills} kill -9 ({self.startup_kills} during start-up), {len(starts)} healthy starts "
              f"(mean {mean_start:.2f}s to healthy, max {max(starts, default=0):.2f}s); "
              f"ERROR/Traceback lines in its log: {server_errors}")
        print(f"jobs: {', '.join(f'{k} {v}' for k, v in sorted(phases.items()))}; {attempts} running records; "
              f"{len(self.watch.killed)} outside SIGKILLs; {discards} attempts discarded while starting; "
              f"{self.watch.transient_doubles} transient double groups; {self.submit_retries} create retries")
        ok = lost == 0 and duplicated == 0 and orphaned == 0 and mismatched == 0 and misnumbered == 0
        print(f"RESULT chaos: jobs={len(results)} seed={args.seed} server_kills={self.kills} "
              f"outside_kills={len(self.watch.killed)} mismatched={mismatched} lost={lost} duplicated={duplicated} "
              f"orphaned={orphaned} misnumbered={misnumbered} elapsed={elapsed:.0f}s {'PASS' if ok else 'FAIL'}",
              flush=True)
        if args.json:
            doc = {
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": machine(), "source": self.source, "seed": args.seed, "jobs": len(results),
                "server_kills": self.kills, "startup_kills": self.startup_kills,
                "outside_kills": len(self.watch.killed), "mismatched": mismatched, "lost": lost,
                "duplicated": duplicated, "orphaned": orphaned, "misnumbered": misnumbered,
                "elapsed_s": round(elapsed, 1),
                "server_start_s": {"mean": round(sum(starts) / max(len(starts), 1), 3),
                                   "max": round(max(starts, default=0), 3)},
                "discarded_starts": discards, "running_records": attempts, "phases": dict(phases),
                "server_log_errors": server_errors,
                "problems": {r.plan.name: r.problems for r in results if r.problems},
            }
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        return 0 if ok else 1


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def scratch(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="openarts-chaos-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-every", type=float, default=3.0, help="mean seconds between server kills")
    ap.add_argument("--timeout", type=float, default=480.0, help="overall bound in seconds")
    ap.add_argument("--source", default="worktree",
                    help='the server code: "worktree" (src/ now, default) or a git revision such as HEAD')
    ap.add_argument("--only-problems", action="store_true", help="print only the jobs with a problem")
    ap.add_argument("--json", help="also write the summary to this file")
    ap.add_argument("--keep", action="store_true", help="keep the data directory (evidence)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    with scratch(args.keep) as root:
        chaos = Chaos(args, root)
        try:
            return chaos.run()
        except KeyboardInterrupt:
            print("chaos: interrupted; cleaning up", flush=True)
            return 130
        finally:
            chaos.cleanup()


if __name__ == "__main__":
    sys.exit(main())
