"""Samples CPU and memory of every running task's process group, folded into per-minute averages.

cpuUsage is the percentage of the flavor's cores the task's processes used over the sample interval;
memUsage the percentage of the flavor's memory held as resident set. One pass over /proc per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict

import psutil
from sqlalchemy import Engine

from openarts.config import Settings
from openarts.core.resources import Catalog
from openarts.store import jobs as w
from openarts.store import queries as q

log = logging.getLogger("openarts.metrics")


class MetricsSampler:
    def __init__(self, settings: Settings, db: Engine, catalog: Catalog, interval: float) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.interval = interval
        self._prev: dict[tuple[str, str], tuple[float, float]] = {}  # (job, task) -> (cpu seconds, wall)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sample()
            except Exception:
                log.exception("metrics sample failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    def sample(self) -> int:
        with self.db.connect() as conn:
            rows = [r for r in q.active_jobs(conn) if r.phase == "Running"]
            tasks = q.current_tasks(conn, rows)
        groups: dict[int, tuple[str, str, str]] = {}
        for row in rows:
            for t in tasks.get(row.id, []):
                if t.exit_code is not None:
                    continue
                pid_file = self.settings.job_dir(row.id) / "attempts" / str(t.seq) / t.task / "worker.pid"
                with contextlib.suppress(OSError, ValueError):
                    groups[int(pid_file.read_text())] = (row.id, t.task, row.flavor_id)
        if not groups:
            return 0
        cpu: dict[int, float] = defaultdict(float)
        rss: dict[int, int] = defaultdict(int)
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
        for pgid, (job_id, task, flavor_id) in groups.items():
            flavor = self.catalog.flavors.get(flavor_id)
            if flavor is None:
                continue
            key = (job_id, task)
            prev = self._prev.get(key)
            self._prev[key] = (cpu[pgid], now)
            if prev is None or now <= prev[1]:
                continue
            used = max(0.0, cpu[pgid] - prev[0]) / (now - prev[1])
            cpu_pct = 100.0 * used / max(flavor.cpu_cores, 0.001)
            mem_pct = 100.0 * rss[pgid] / max(flavor.memory_mb * 2**20, 1)
            samples.append((job_id, task, minute, cpu_pct, mem_pct))
        live = {(j, t) for j, t, _ in groups.values()}
        for key in [k for k in self._prev if k not in live]:
            del self._prev[key]
        if samples:
            with self.db.begin() as conn:
                w.add_metric_samples(conn, samples)
        return len(samples)

