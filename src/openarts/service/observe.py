"""Read-only views of a job's tasks: logs, events, metrics, task list."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from openarts.config import Settings
from openarts.core import errors
from openarts.service.logs import LogReader
from openarts.store import queries as q
from openarts.store.db import Database

T = TypeVar("T")
TASK_RE = re.compile(r"worker-(0|[1-9]\d{0,5})")


class LineQuery(NamedTuple):
    base: int | None
    lines: int
    order: str


class ObserveService:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.reader = LogReader()
        # log reads have their own small pool: a first read of a large log (building its line index)
        # must not hold up staging and uploads, which use asyncio's default pool
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="openarts-logs")

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run file reads in the log pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def task_log(self, project_id: str, job_id: str, task_id: str) -> Path:
        """The log of a task's latest attempt (it may not exist yet)."""
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
        m = TASK_RE.fullmatch(task_id)
        if not m or int(m.group(1)) >= row.node_count:
            raise errors.TaskNotFound(job_id, task_id)
        if not row.attempt:
            raise errors.LogNotReady(f"Task {task_id} of training job {job_id} has not started; no log yet.")
        return self.settings.attempt_dir(job_id, row.attempt, task_id) / "log"

    def preview(self, path: Path) -> dict[str, Any]:
        """The latest part of a log, at most log_preview_bytes (file I/O: call it off the event loop)."""
        data, full = self.reader.tail(path, self.settings.log_preview_bytes)
        return {"content": data.decode("utf-8", errors="replace"), "current_size": len(data), "full_size": full}

    @staticmethod
    def line_query(base_line: str | None, lines: str | None, order: str | None) -> LineQuery:
        try:
            n = int(lines) if lines not in (None, "") else 500
            base = int(base_line) if base_line not in (None, "") else None
        except ValueError as exc:
            raise errors.QueryParamsError("base_line and lines must be integers.") from exc
        if not 1 <= n <= 10000:
            raise errors.QueryParamsError("lines must be from 1 to 10000.")
        order = order or "desc"
        if order not in ("asc", "desc"):
            raise errors.QueryParamsError("order must be 'asc' or 'desc'.")
        return LineQuery(base, n, order)

    def lines(self, path: Path, query: LineQuery) -> dict[str, Any]:
        """A page of a log by lines (file I/O: call it off the event loop)."""
        start, chunk = self.reader.page(path, query.base, query.lines, query.order)
        end = start + len(chunk) - 1
        content = b"".join(chunk).decode("utf-8", errors="replace")
        return {"start_line": str(start if chunk else 0), "end_line": str(end if chunk else 0),
                "lines": len(chunk), "content": content}

    def tasks(self, project_id: str, job_id: str, schedule_count: str | None) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            q.get_job(conn, project_id, job_id)
            rows = q.all_tasks(conn, job_id)
        if schedule_count not in (None, ""):
            try:
                seq = int(schedule_count)
            except ValueError as exc:
                raise errors.QueryParamsError("schedule_count must be an integer.") from exc
            rows = [t for t in rows if t.seq == seq]
        else:
            latest = max((t.seq for t in rows), default=0)
            rows = [t for t in rows if t.seq == latest]
        return [{"task": t.task, "ip": t.ip, "host_ip": t.ip, "schedule_count": t.seq} for t in rows]

    def events(self, project_id: str, job_id: str, params: dict[str, str]) -> dict[str, Any]:
        def num(name: str, default: int | None, lo: int, hi: int) -> int | None:
            raw = params.get(name)
            if raw in (None, ""):
                return default
            try:
                v = int(raw)
            except ValueError as exc:
                raise errors.QueryParamsError(f"{name} must be an integer.") from exc
            if not lo <= v <= hi:
                raise errors.QueryParamsError(f"{name} must be from {lo} to {hi}.")
            return v

        offset = num("offset", 0, 0, 10**9) or 0
        limit = num("limit", 50, 1, 1000) or 50
        start = num("start_time", None, 0, 10**14)
        end = num("end_time", None, 0, 10**14)
        order = params.get("order") or "asc"
        if order not in ("asc", "desc"):
            raise errors.QueryParamsError("order must be 'asc' or 'desc'.")
        with self.db.connect() as conn:
            q.get_job(conn, project_id, job_id)
            total, rows = q.job_events(conn, job_id, offset=offset, limit=limit, order=order, start_ms=start,
                                       end_ms=end, level=params.get("level") or None,
                                       pattern=params.get("pattern") or None)
        return {"total": total, "limit": limit, "offset": offset, "order": order,
                "start_time": start or 0, "end_time": end or 0,
                "events": [{"message": e.message, "level": e.level, "time": e.time_ms, "source": e.source}
                           for e in rows]}

    def stages(self, project_id: str, job_id: str) -> dict[str, Any]:
        """Each attempt as stages: waiting (queued, or recovering after the previous attempt),
        preparing (directories, code and data staged, workers spawned), running."""
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
            attempts = [a for a in q.all_attempts(conn, job_id) if a.started]
        records = []
        previous_end = row.create_ms
        for a in attempts:
            waiting = "recovering" if a.start_type == "restarted" or a.seq > 1 else "queuing"
            spans = [(waiting, previous_end, a.opened_ms, "Waiting for resources." if waiting == "queuing"
                      else f"Recovering after attempt {a.seq - 1}."),
                     ("preparing", a.opened_ms, a.started_ms, "Staging code and data; starting workers."),
                     ("running", a.started_ms, a.end_ms, a.end_reason or "Running.")]
            records.append({"record_order": a.seq, "stages": [
                {"job_id": job_id, "name": name, "en_message": message, "zh_message": "",
                 "start_time": str(start), "end_time": str(end) if end else "", "stage_order": i,
                 "sub_stages": []}
                for i, (name, start, end, message) in enumerate(spans, start=1)]})
            previous_end = a.end_ms or previous_end
        return {"total_count": len(records), "running_records": records}

    def metrics(self, project_id: str, job_id: str, task_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
            m = TASK_RE.fullmatch(task_id)
            if not m or int(m.group(1)) >= row.node_count:
                raise errors.TaskNotFound(job_id, task_id)
            samples = q.task_metrics(conn, job_id, task_id)
        cpu: list[float] = []
        mem: list[float] = []
        if row.start_ms:
            first = row.start_ms // 60000
            last = (row.end_ms if row.end_ms and not row.running_since_ms else int(time.time() * 1000)) // 60000
            by_minute = {s.minute: s for s in samples}
            for minute in range(first, max(first, last) + 1):
                s = by_minute.get(minute)
                cpu.append(round(s.cpu_sum / s.samples, 2) if s else -1.0)
                mem.append(round(s.mem_sum / s.samples, 2) if s else -1.0)
        return {"metrics": [{"metric": "cpuUsage", "value": cpu}, {"metric": "memUsage", "value": mem}]}

