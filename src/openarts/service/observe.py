"""Read-only views of a job's tasks: logs, events, metrics, task list."""

from __future__ import annotations

import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from openarts.config import Settings
from openarts.core import errors
from openarts.store import queries as q
from openarts.store.db import Database, Record

TASK_RE = re.compile(r"worker-(0|[1-9]\d{0,5})")


class ObserveService:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def _task_log(self, project_id: str, job_id: str, task_id: str) -> tuple[Record, Path]:
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
        m = TASK_RE.fullmatch(task_id)
        if not m or int(m.group(1)) >= row.node_count:
            raise errors.TaskNotFound(job_id, task_id)
        if not row.attempt:
            raise errors.LogNotReady(f"Task {task_id} of training job {job_id} has not started; no log yet.")
        path = self.settings.attempt_dir(job_id, row.attempt, task_id) / "log"
        return row, path

    def log_preview(self, project_id: str, job_id: str, task_id: str) -> dict[str, Any]:
        _, path = self._task_log(project_id, job_id, task_id)
        limit = self.settings.log_preview_bytes
        try:
            with path.open("rb") as fh:
                full = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, full - limit))
                data = fh.read(limit)
        except FileNotFoundError:
            full, data = 0, b""
        if full > limit:  # start at a line boundary
            cut = data.find(b"\n")
            if 0 <= cut < len(data) - 1:
                data = data[cut + 1:]
        return {"content": data.decode("utf-8", errors="replace"), "current_size": len(data),
                "full_size": full}

    def log_lines(self, project_id: str, job_id: str, task_id: str, base_line: str | None,
                  lines: str | None, order: str | None) -> dict[str, Any]:
        _, path = self._task_log(project_id, job_id, task_id)
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
        start, chunk = _read_lines(path, base, n, order)
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


def _read_lines(path: Path, base: int | None, n: int, order: str) -> tuple[int, list[bytes]]:
    """Lines split on '\n' only (a '\r' progress bar stays one line), 1-based. One pass over the
    file, holding at most `n` lines: `asc` reads n lines from `base` (default 1), `desc` the n lines
    ending at `base` (default: the last line)."""
    window: deque[bytes] = deque(maxlen=n)
    number = 0
    try:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if order == "asc":
                    if number >= (base or 1):
                        window.append(line)
                        if len(window) == n:
                            break
                else:
                    window.append(line)
                    if base is not None and number >= base:
                        break
    except FileNotFoundError:
        return 0, []
    if order == "asc":
        return max(1, base or 1), list(window)
    return number - len(window) + 1, list(window)
