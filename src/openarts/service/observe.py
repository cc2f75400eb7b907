"""Read-only views of a job's tasks: logs, events, metrics, task list, route plan."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlencode

import orjson

from openarts.config import Settings
from openarts.core import errors
from openarts.core.inputs import INT64_MAX, INT64_MIN, query_int
from openarts.core.phases import is_terminal
from openarts.core.roles import role_of, task_index
from openarts.core.search import request_metrics
from openarts.core.spec import exported_log_url
from openarts.security.log_links import VALID_SECONDS, LogLinks
from openarts.service.logs import LogReader
from openarts.storage.obs import ObjectStore
from openarts.store import log_metrics as lm
from openarts.store import queries as q
from openarts.store.db import Database
from openarts.store.rows import JobRow

T = TypeVar("T")
log = logging.getLogger("openarts")
ATTEMPT_RE = re.compile(r"[1-9][0-9]{0,8}")


class LineQuery(NamedTuple):
    base: int | None
    lines: int
    order: str


class ObserveService:
    def __init__(self, settings: Settings, db: Database, links: LogLinks, store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.db = db
        self.links = links
        self.store = store  # for presigned links to exported logs (S3)
        self.reader = LogReader()
        # log reads have their own small pool: a first read of a large log (building its line index)
        # must not hold up staging and uploads, which use asyncio's default pool
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="openarts-logs")

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run file reads in the log pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def task_log(self, project_id: str, job_id: str, task_id: str, attempt: str | None = None) -> Path:
        """The log of a task's latest attempt, or of attempt `attempt` (an openarts extension: the
        attempt's number, its `schedule_count`, 1 for the first); the file may not exist yet."""
        return self._task_log(project_id, job_id, task_id, attempt)[1]

    def _task_log(self, project_id: str, job_id: str, task_id: str, attempt: str | None) -> tuple[JobRow, Path]:
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
        if task_index(row.shapes(), task_id) is None:
            raise errors.TaskNotFound(job_id, task_id)
        seq = row.attempt
        if attempt:  # absent or empty: the latest, as ModelArts
            if not ATTEMPT_RE.fullmatch(attempt):
                raise errors.QueryParamsError(f"attempt must be a whole number from 1 (the first attempt), "
                                              f"not {attempt[:40]!r}.")
            seq = int(attempt)
            if seq > row.attempt:
                have = f"attempts 1 to {row.attempt}" if row.attempt > 1 else \
                    "one attempt" if row.attempt else "no attempt yet"
                raise errors.QueryParamsError(f"Training job (ID: {job_id}) has no attempt {seq}: it has {have}.")
        if not seq:
            raise errors.LogNotReady(f"Task {task_id} of training job {job_id} has not started; no log yet.")
        return row, self.settings.attempt_dir(job_id, seq, task_id) / "log"

    async def log_url(self, project_id: str, job_id: str, task_id: str, content_type: str, base_url: str,
                      attempt: str | None = None) -> dict[str, Any]:
        """A link to the task's log that needs no AK/SK and expires in 5 minutes: as ModelArts, a presigned
        URL of the log exported to spec.log_export_path (S3) once it is there; otherwise the server's own
        signed link (security/log_links.py), `text/plain` to read it in a browser, otherwise
        (`application/octet-stream`) to download it."""
        row, path = self._task_log(project_id, job_id, task_id, attempt)
        seq = int(path.parent.parent.name)
        presigned = await self._presigned(row, task_id, seq)
        if presigned:
            return {"obs_url": presigned}
        disposition = "inline" if content_type.split(";", 1)[0].strip().lower() == "text/plain" else "attachment"
        expires = int(time.time()) + VALID_SECONDS
        signature = self.links.sign(project_id, job_id, task_id, seq, disposition, expires)
        query = urlencode({"attempt": seq, "disposition": disposition, "expires": expires, "signature": signature})
        return {"obs_url": f"{base_url.rstrip('/')}/v2/{project_id}/training-jobs/{job_id}/tasks/{task_id}"
                           f"/logs/download?{query}"}

    async def _presigned(self, row: JobRow, task_id: str, seq: int) -> str | None:
        """A presigned URL of the task's log of attempt `seq` as exported to spec.log_export_path.obs_url,
        or None: no store that presigns, no export path, an attempt that has not ended (its log is
        exported when it ends, whole), or no exported object (the export failed). A store that does not
        answer is logged, and the server's own link given instead."""
        if self.store is None or not (seq < row.attempt or is_terminal(row.phase)):
            return None
        request = orjson.loads(row.request)
        if "tasks" in request:  # a heterogeneous job: the task's role's
            holder: dict[str, Any] = next((t for t in request["tasks"] if t.get("role") == role_of(task_id)), {})
        else:
            holder = request.get("spec") or {}
        base = (holder.get("log_export_path") or {}).get("obs_url")
        if not base or not isinstance(base, str):
            return None
        url = exported_log_url(base, row.id, task_id, seq)
        try:
            return await asyncio.to_thread(self.store.presign, url, VALID_SECONDS)
        except (OSError, errors.OpenartsError) as exc:
            log.warning("no presigned link to %s: %s", url, exc)
            return None

    def signed_log(self, project_id: str, job_id: str, task_id: str, params: dict[str, str]) -> tuple[Path, str]:
        """The log a link opens, and how to serve it; AuthenticationFailed if the link is not one this
        server signed, or it expired."""
        try:
            seq, expires = int(params["attempt"]), int(params["expires"])
            disposition, signature = params["disposition"], params["signature"]
        except (KeyError, ValueError):
            raise errors.AuthenticationFailed("This log link is incomplete.") from None
        if not self.links.valid(project_id, job_id, task_id, seq, disposition, expires, signature, time.time()):
            raise errors.AuthenticationFailed("This log link is invalid or expired; ask for a new one.")
        path = self.task_log(project_id, job_id, task_id, str(seq))
        if not path.is_file():
            raise errors.LogNotReady(f"Task {task_id} of training job {job_id} has no log yet.")
        return path, disposition

    def preview(self, path: Path) -> dict[str, Any]:
        """The latest part of a log, at most log_preview_bytes (file I/O: call it off the event loop)."""
        data, full = self.reader.tail(path, self.settings.log_preview_bytes)
        return {"content": data.decode("utf-8", errors="replace"), "current_size": len(data), "full_size": full}

    @staticmethod
    def line_query(base_line: str | None, lines: str | None, order: str | None) -> LineQuery:
        n = query_int("lines", lines, 500, 1, 10000) or 500
        base = query_int("base_line", base_line, None, INT64_MIN, INT64_MAX)
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
        seq = query_int("schedule_count", schedule_count, None, 0, INT64_MAX)
        if seq is not None:
            rows = [t for t in rows if t.seq == seq]
        else:
            latest = max((t.seq for t in rows), default=0)
            rows = [t for t in rows if t.seq == latest]
        # host_ip is left out: the local executor knows one address per worker, not a host behind it
        return [{"task": t.task, "ip": t.ip, "schedule_count": t.seq} for t in rows]

    def route_plan(self, project_id: str, job_id: str) -> dict[str, Any]:
        """The job's rank mapping, `rank-worker` pairs comma-separated. openarts plans no routes: a worker's
        rank is its index in the job (RANK, supervisor/workspace.py; VC_TASK_INDEX for a plain job), whatever
        its node. So the answer is
        ModelArts' for a job route planning does not apply to, status `failed` and the default mapping, over
        the workers of the latest attempt's placement (store tasks), or of spec.resource.node_count while
        the job is not placed yet."""
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
            placed = q.current_tasks(conn, [row]).get(row.id, [])
        workers = [t.idx for t in placed] or list(range(row.node_count))
        return {"job_id": row.id, "status": "failed", "rank_mapping": ",".join(f"{i}-{i}" for i in workers)}

    def events(self, project_id: str, job_id: str, params: dict[str, str]) -> dict[str, Any]:
        def num(name: str, default: int | None, lo: int, hi: int) -> int | None:
            return query_int(name, params.get(name), default, lo, hi)

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
                # strings, as the SDK's model types them (milliseconds); the window only when one was asked for
                **({"start_time": str(start)} if start is not None else {}),
                **({"end_time": str(end)} if end is not None else {}),
                "events": [{"message": e.message, "level": e.level, "time": str(e.time_ms), "source": e.source}
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
            if task_index(row.shapes(), task_id) is None:
                raise errors.TaskNotFound(job_id, task_id)
            samples = q.task_metrics(conn, job_id, task_id)
            logged = {r.name: r for r in lm.of_task(conn, job_id, task_id)}
        if not row.start_ms:
            raise errors.MetricsNotReady(f"Training job (ID: {job_id}) has not run yet; no metrics.")
        cpu: list[float] = []
        mem: list[float] = []
        first = row.start_ms // 60000
        last = (row.end_ms if row.end_ms and not row.running_since_ms else int(time.time() * 1000)) // 60000
        by_minute = {s.minute: s for s in samples}
        for minute in range(first, max(first, last) + 1):
            s = by_minute.get(minute)
            cpu.append(round(s.cpu_sum / s.samples, 2) if s else -1.0)
            mem.append(round(s.mem_sum / s.samples, 2) if s else -1.0)
        custom = []  # its custom metrics (reward_attrs), as read from the task's log: every value, in log order
        for r in request_metrics(orjson.loads(row.request)) if row.kind == "job" else ():
            if r.name in ("cpuUsage", "memUsage"):
                continue  # the platform's own, shown above
            got = logged.get(r.name)
            custom.append({"metric": r.name, "value": [float(v) for _, v in orjson.loads(got.values)] if got else []})
        return {"metrics": [{"metric": "cpuUsage", "value": cpu}, {"metric": "memUsage", "value": mem}, *custom]}

