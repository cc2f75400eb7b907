"""Samples every running task's process group: CPU and memory metrics, and progress for hang detection.

cpuUsage is the percentage of the flavor's cores the task's processes used over the sample interval;
memUsage the percentage of the flavor's memory held as resident set; both are folded into per-minute
averages in the store. A task makes *progress* when its log grew or its processes used CPU since the
last sample; `last_progress()` is what the supervisor's hang detection reads. Progress times live in
memory: after a server restart every task's hang window starts afresh (never a false hang).
One pass over /proc per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass

import psutil

from openarts.config import Settings
from openarts.core.resources import Catalog
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database

log = logging.getLogger("openarts.metrics")

CPU_PROGRESS_SECONDS = 0.005  # CPU time per sample below this is no progress (an idle sleep uses none)

Key = tuple[str, int, str]  # job id, attempt, task


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
                pid_file = self.settings.attempt_dir(row.id, t.seq, t.task) / "worker.pid"
                with contextlib.suppress(OSError, ValueError):
                    groups[int(pid_file.read_text())] = ((row.id, t.seq, t.task), row.flavor_id)
        return groups

    def sample(self) -> int:
        groups = self._groups()
        cpu: dict[int, float] = defaultdict(float)
        rss: dict[int, int] = defaultdict(int)
        if groups:
            for proc in psutil.process_iter(["pid"]):
                try:
                    pgid = os.getpgid(proc.pid)
                    if pgid not in groups:
                        continue
                    with proc.oneshot():
                        times = proc.cpu_times()
                        cpu[pgid] += times.user + times.system + times.children_user + times.children_system
                        rss[pgid] += proc.memory_info().rss
                except (psutil.Error, ProcessLookupError, PermissionError):
                    continue
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
