"""Samples every running task's process group: CPU and memory metrics, and progress for hang detection.

cpuUsage is the percentage of the flavor's cores the task's processes used over the sample interval;
memUsage the percentage of the flavor's memory held as resident set; both are folded into per-minute
averages in the store. A task makes *progress* when its log grew or its processes used CPU since the
last sample; `last_progress()` is what the supervisor's hang detection reads. Progress times live in
memory: after a server restart every task's hang window starts afresh (never a false hang).
One pass over /proc per sample.

Memory limit: a task whose processes (its process group and session) hold more than its flavor's
memory is marked out of memory in the store (`tasks.oom_ms`, durable), told so in its log, and
SIGKILLed; the supervisor then ends the attempt as out of memory (decide.termination_of). Sampled, so
an allocation faster than `metrics_interval_seconds` can go past the limit before it is seen
(docs/FLAVORS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import psutil

from openarts.config import Settings
from openarts.core.reasons import oom_reason
from openarts.core.resources import Catalog
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database

log = logging.getLogger("openarts.metrics")

CPU_PROGRESS_SECONDS = 0.005  # CPU time per sample below this is no progress (an idle sleep uses none)

Key = tuple[str, int, str]  # job id, attempt, task


def over_limit(rss: int, limit_mb: int, processes: int, pss: Callable[[], int]) -> int | None:
    """The bytes a task holds when that is more than its flavor's `limit_mb`, else None.

    `rss` is the resident set summed over the task's `processes`: a page several of them share (after a
    fork, or a shared library) counts once per process. So when that sum is over the limit and there is
    more than one process, their proportional set size decides (`pss()`: each shared page split among
    its sharers), which counts every page once as a cgroup would. 0: no limit."""
    limit = limit_mb * 2**20
    if limit <= 0 or rss <= limit:
        return None
    used = pss() if processes > 1 else rss
    return used if used > limit else None


def _pss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            total += proc.memory_full_info().pss
    return total


@dataclass
class _Seen:
    cpu: float
    log_size: int
    at: float
    progress_at: float


class MetricsSampler:
    def __init__(self, settings: Settings, db: Database, catalog: Catalog, interval: float) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.interval = interval
        self._seen: dict[Key, _Seen] = {}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    def last_progress(self, key: Key) -> float | None:
        seen = self._seen.get(key)
        return seen.progress_at if seen else None

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sample()
            except Exception:
                log.exception("metrics sample failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    def _groups(self) -> dict[int, tuple[Key, str]]:
        with self.db.connect() as conn:
            rows = [r for r in q.active_jobs(conn) if r.phase == "Running"]
            tasks = q.current_tasks(conn, rows)
        groups: dict[int, tuple[Key, str]] = {}
        for row in rows:
            for t in tasks.get(row.id, []):
                if t.exit_code is not None:
                    continue
                run_dir = self.settings.attempt_dir(row.id, t.seq, t.task)
                if (run_dir / "exit").exists():  # ended: its pid may be reused by now, never signal it
                    continue
                pid_file = run_dir / "worker.pid"
                with contextlib.suppress(OSError, ValueError):
                    groups[int(pid_file.read_text())] = ((row.id, t.seq, t.task), row.flavor_id)
        return groups

    def sample(self) -> int:
        groups = self._groups()
        cpu: dict[int, float] = defaultdict(float)
        rss: dict[int, int] = defaultdict(int)
        procs: dict[int, list[psutil.Process]] = defaultdict(list)
        if groups:
            for proc in psutil.process_iter(["pid"]):
                try:
                    # the worker leads its own session and process group (setsid): a process that
                    # left the group but not the session is still the task's
                    pgid = os.getpgid(proc.pid)
                    if pgid not in groups:
                        pgid = os.getsid(proc.pid)
                        if pgid not in groups:
                            continue
                    with proc.oneshot():
                        times = proc.cpu_times()
                        cpu[pgid] += times.user + times.system + times.children_user + times.children_system
                        rss[pgid] += proc.memory_info().rss
                    procs[pgid].append(proc)
                except (psutil.Error, ProcessLookupError, PermissionError):
                    continue
            self._enforce_memory(groups, rss, procs)
        now = time.time()
        minute = int(now // 60)
        samples = []
        for pgid, (key, flavor_id) in groups.items():
            job_id, seq, task = key
            log_path = self.settings.attempt_dir(job_id, seq, task) / "log"
            try:
                log_size = log_path.stat().st_size
            except OSError:
                log_size = 0
            prev = self._seen.get(key)
            if prev is None:
                self._seen[key] = _Seen(cpu[pgid], log_size, now, now)
                continue
            used = max(0.0, cpu[pgid] - prev.cpu)
            progressed = log_size != prev.log_size or used >= CPU_PROGRESS_SECONDS
            self._seen[key] = _Seen(cpu[pgid], log_size, now, now if progressed else prev.progress_at)
            flavor = self.catalog.flavors.get(flavor_id)
            if flavor is None or now <= prev.at:
                continue
            cpu_pct = 100.0 * used / (now - prev.at) / max(flavor.cpu_cores, 0.001)
            mem_pct = 100.0 * rss[pgid] / max(flavor.memory_mb * 2**20, 1)
            samples.append((job_id, task, minute, cpu_pct, mem_pct))
        live = {key for key, _ in groups.values()}
        for key in [k for k in self._seen if k not in live]:
            del self._seen[key]
        if samples:
            with self.db.begin() as conn:
                w.add_metric_samples(conn, samples)
        return len(samples)

    def _enforce_memory(self, groups: dict[int, tuple[Key, str]], rss: dict[int, int],
                        procs: dict[int, list[psutil.Process]]) -> None:
        """Mark and kill every task over its flavor's memory. The mark is committed before the kill, so
        a server that dies in between still classifies the end right (and kills it on its next sample)."""
        for pgid, ((job_id, seq, task), flavor_id) in groups.items():
            flavor = self.catalog.flavors.get(flavor_id)
            members = procs.get(pgid, [])
            if flavor is None or not members:
                continue
            used = over_limit(rss[pgid], flavor.memory_mb, len(members), partial(_pss, members))
            if used is None:
                continue
            reason = oom_reason(used, flavor.memory_mb)
            now = w.now_ms()
            with self.db.begin() as conn:
                marked = w.mark_task_oom(conn, job_id, seq, task, now, reason)
                if marked:
                    w.add_event(conn, job_id, f"Task {task} ran out of memory "
                                f"({reason.removeprefix('out of memory: ')}): its processes are killed.", now,
                                level="Warning", source="Worker")
            if marked:  # once per task: later samples only kill what is left
                log.warning("job %s task %s: %s: killing process group %d", job_id, task, reason, pgid)
                with contextlib.suppress(OSError), \
                        open(self.settings.attempt_dir(job_id, seq, task) / "log", "a") as fh:
                    fh.write(f"[ModelArts Service Log] {reason}: the task's processes are killed.\n")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            for proc in members:  # those that left the process group, not the session
                with contextlib.suppress(psutil.Error, OSError):
                    if os.getpgid(proc.pid) != pgid:
                        proc.kill()
