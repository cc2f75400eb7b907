"""Samples every running task: CPU and memory metrics, and progress for hang detection.

cpuUsage is the percentage of the flavor's cores the task's processes used over the sample interval;
memUsage the percentage of the flavor's memory held as resident set; both are folded into per-minute
averages in the store. A task makes *progress* when its log grew or its processes used CPU since the
last sample; `last_progress()` is what the supervisor's hang detection reads. Progress times live in
memory: after a server restart every task's hang window starts afresh (never a false hang).
The numbers come from the executor (`Executor.usage`: one scan of each node's processes per sample).
Each round also reads the custom metrics of jobs that have them from their tasks' logs
(supervisor/log_metrics.py).

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
import time
from dataclasses import dataclass

from openarts.config import Settings
from openarts.core.reasons import oom_reason
from openarts.core.resources import Catalog
from openarts.core.roles import shape_at
from openarts.core.search import SEARCH_KIND
from openarts.executors.base import Executor, Key, TaskHandle, Usage
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database
from openarts.store.rows import JobRow, TaskRow
from openarts.supervisor.log_metrics import LogMetrics

log = logging.getLogger("openarts.metrics")

CPU_PROGRESS_SECONDS = 0.005  # CPU time per sample below this is no progress (an idle sleep uses none)


def handle_of(settings: Settings, row: JobRow, t: TaskRow) -> TaskHandle:
    """The executor's handle of a task, as the store keeps it."""
    return TaskHandle(row.id, t.seq, t.task, t.pid, t.pid_start, settings.attempt_dir(row.id, t.seq, t.task), t.node)


@dataclass
class _Seen:
    cpu: float
    log_size: int
    at: float
    progress_at: float


class MetricsSampler:
    def __init__(self, settings: Settings, db: Database, catalog: Catalog, executor: Executor,
                 interval: float) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.executor = executor
        self.interval = interval
        self._seen: dict[Key, _Seen] = {}
        self._stopping = asyncio.Event()
        self.logs = LogMetrics(settings, db)
        self._loaded: tuple[list[JobRow], dict[str, list[TaskRow]]] = ([], {})  # this round's, for self.logs

    def stop(self) -> None:
        self._stopping.set()

    def ended(self, job_id: str, seq: int, tasks: list[str]) -> None:
        """The supervisor ended a job: its custom metrics are read to the end of its logs next round."""
        self.logs.ended(job_id, seq, tasks)

    def last_progress(self, key: Key) -> float | None:
        seen = self._seen.get(key)
        return seen.progress_at if seen else None

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sample()
            except Exception:
                log.exception("metrics sample failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    def _tasks(self) -> dict[Key, tuple[TaskHandle, str]]:
        """Every task of a Running job that has not ended, with its flavor."""
        with self.db.connect() as conn:
            active = [r for r in q.active_jobs(conn) if r.kind != SEARCH_KIND]
            rows = [r for r in active if r.phase == "Running"]
            tasks = q.current_tasks(conn, rows)
        self._loaded = (active, tasks)
        return {(row.id, t.seq, t.task): (handle_of(self.settings, row, t), shape_at(row.shapes(), t.idx)[0].flavor_id)
                for row in rows for t in tasks.get(row.id, []) if t.exit_code is None}

    def _limit(self, flavor_id: str) -> int:
        flavor = self.catalog.flavors.get(flavor_id)
        return flavor.memory_mb * 2**20 if flavor is not None else 0

    async def sample(self) -> int:
        tasks = self._tasks()
        used = await self.executor.usage({key: (handle, self._limit(flavor_id))
                                    for key, (handle, flavor_id) in tasks.items()}) if tasks else {}
        await self._enforce_memory(tasks, used)
        now = time.time()
        minute = int(now // 60)
        samples = []
        for key, usage in used.items():
            job_id, _, task = key
            prev = self._seen.get(key)
            if prev is None:
                self._seen[key] = _Seen(usage.cpu_seconds, usage.log_size, now, now)
                continue
            spent = max(0.0, usage.cpu_seconds - prev.cpu)
            progressed = usage.log_size != prev.log_size or spent >= CPU_PROGRESS_SECONDS
            self._seen[key] = _Seen(usage.cpu_seconds, usage.log_size, now, now if progressed else prev.progress_at)
            flavor = self.catalog.flavors.get(tasks[key][1])
            if flavor is None or now <= prev.at:
                continue
            cpu_pct = 100.0 * spent / (now - prev.at) / max(flavor.cpu_cores, 0.001)
            mem_pct = 100.0 * usage.rss / max(flavor.memory_mb * 2**20, 1)
            samples.append((job_id, task, minute, cpu_pct, mem_pct))
        for key in [k for k in self._seen if k not in used]:
            del self._seen[key]
        if samples:
            with self.db.begin() as conn:
                w.add_metric_samples(conn, samples)
        await self.logs.read(*self._loaded)
        return len(samples)

    async def _enforce_memory(self, tasks: dict[Key, tuple[TaskHandle, str]], used: dict[Key, Usage]) -> None:
        """Mark and kill every task over its flavor's memory. The mark is committed before the kill, so
        a server that dies in between still classifies the end right (and kills it on its next sample)."""
        for key, usage in used.items():
            handle, flavor_id = tasks[key]
            flavor = self.catalog.flavors.get(flavor_id)
            if usage.over_limit is None or flavor is None:
                continue
            job_id, seq, task = key
            reason = oom_reason(usage.over_limit, flavor.memory_mb)
            now = w.now_ms()
            with self.db.begin() as conn:
                marked = w.mark_task_oom(conn, job_id, seq, task, now, reason)
                if marked:
                    w.add_event(conn, job_id, f"Task {task} ran out of memory "
                                f"({reason.removeprefix('out of memory: ')}): its processes are killed.", now,
                                level="Warning", source="Worker")
            note = ""
            if marked:  # once per task: later samples only kill what is left
                log.warning("job %s task %s: %s: killing its processes", job_id, task, reason)
                note = f"[ModelArts Service Log] {reason}: the task's processes are killed."
            await self.executor.kill(handle, note)
