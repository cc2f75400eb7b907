"""Reads. Row objects are SQLAlchemy Rows; callers treat them as read-only records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, asc, desc, false, func, or_, select, true

from openarts.core import errors
from openarts.core.phases import TERMINAL, Phase
from openarts.store.schema import attempts, events, fences, jobs, metrics, node_counts, quotas, tasks

_TERMINAL = [p.value for p in TERMINAL]
_ACTIVE = [p.value for p in Phase if p not in TERMINAL]


def get_job(conn: Connection, project_id: str, job_id: str) -> Row[Any]:
    row = conn.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.project_id == project_id)).first()
    if row is None or row.delete_requested:
        raise errors.JobNotFound(job_id)
    return row


def job_details(conn: Connection, job_rows: Sequence[Row[Any]]) -> dict[str, dict[str, list[Row[Any]]]]:
    """Attempts, latest-attempt tasks and node counts of several jobs, in three queries."""
    ids = [r.id for r in job_rows]
    out: dict[str, dict[str, list[Row[Any]]]] = {
        i: {"attempts": [], "tasks": [], "node_counts": []} for i in ids}
    if not ids:
        return out
    for a in conn.execute(select(attempts).where(attempts.c.job_id.in_(ids), attempts.c.started.is_(True))
                          .order_by(attempts.c.job_id, attempts.c.seq)):
        out[a.job_id]["attempts"].append(a)
    latest = {r.id: r.attempt for r in job_rows}
    conds = [and_(tasks.c.job_id == r.id, tasks.c.seq == r.attempt) for r in job_rows if r.attempt]
    if conds:
        for t in conn.execute(select(tasks).where(or_(*conds)).order_by(tasks.c.job_id, tasks.c.idx)):
            if latest.get(t.job_id) == t.seq:
                out[t.job_id]["tasks"].append(t)
    for n in conn.execute(select(node_counts).where(node_counts.c.job_id.in_(ids))
                          .order_by(node_counts.c.job_id, node_counts.c.id)):
        out[n.job_id]["node_counts"].append(n)
    return out


UNSET_KEYS = frozenset({"algorithm_name", "runtime_type"})
SORTABLE = {"create_time": jobs.c.create_ms, "name": jobs.c.name, "phase": jobs.c.phase,
            "update_time": jobs.c.update_ms}


def search_jobs(conn: Connection, project_id: str, *, filters: list[dict[str, Any]], sort_by: str,
                order: str, offset: int, limit: int, workspace_id: str | None = None
                ) -> tuple[int, list[Row[Any]]]:
    conds: list[Any] = [jobs.c.project_id == project_id, jobs.c.delete_requested.is_(False)]
    if workspace_id:
        conds.append(jobs.c.workspace_id == workspace_id)
    for f in filters:
        key, op, values = f["key"], f["operator"], f["value"]
        column = {"name": jobs.c.name, "phase": jobs.c.phase, "create_time": jobs.c.create_ms,
                  "kind": jobs.c.kind, "user_name": jobs.c.user_name, "user_id": jobs.c.user_name,
                  "flavor_id": jobs.c.flavor_id, "pool_id": jobs.c.pool_id,
                  "workspace_id": jobs.c.workspace_id}.get(key)
        if column is None and key in UNSET_KEYS:  # documented keys no local job has a value for
            conds.append(true() if op == "not" else false())
            continue
        if column is None:
            raise errors.UnsupportedFilter(f"Unsupported filter key {key!r}.")
        if op == "like":
            pattern = "".join("\\" + ch if ch in "%_\\" else ch for ch in str(values[0]))
            conds.append(column.like(f"%{pattern}%", escape="\\"))
        elif op == "in":
            conds.append(column.in_(values))
        elif op == "not":
            conds.append(column.not_in(values))
        elif op == "between":
            if key != "create_time" or len(values) != 2:
                raise errors.UnsupportedFilter("'between' takes create_time and two values.")
            try:
                lo, hi = int(values[0]), int(values[1])
            except (TypeError, ValueError) as exc:
                raise errors.UnsupportedFilter("'between' values must be integers (ms).") from exc
            conds.append(column.between(lo, hi))
        else:
            raise errors.UnsupportedFilter(f"Unsupported filter operator {op!r}.")
    where = and_(*conds)
    total = conn.execute(select(func.count()).select_from(jobs).where(where)).scalar_one()
    column = SORTABLE[sort_by]
    direction = asc if order == "asc" else desc
    rows = conn.execute(select(jobs).where(where).order_by(direction(column), direction(jobs.c.id))
                        .offset(offset).limit(limit)).all()
    return int(total), list(rows)


def name_exists(conn: Connection, project_id: str, name: str) -> bool:
    return conn.execute(select(jobs.c.id).where(jobs.c.project_id == project_id, jobs.c.name == name,
                                                jobs.c.delete_requested.is_(False))).first() is not None


def job_events(conn: Connection, job_id: str, *, offset: int, limit: int, order: str,
               start_ms: int | None, end_ms: int | None, level: str | None, pattern: str | None
               ) -> tuple[int, list[Row[Any]]]:
    conds: list[Any] = [events.c.job_id == job_id]
    if start_ms is not None:
        conds.append(events.c.time_ms >= start_ms)
    if end_ms is not None:
        conds.append(events.c.time_ms <= end_ms)
    if level:
        conds.append(events.c.level == level)
    if pattern:
        conds.append(events.c.message.contains(pattern, autoescape=True))
    total = conn.execute(select(func.count()).select_from(events).where(*conds)).scalar_one()
    direction = asc if order == "asc" else desc
    rows = conn.execute(select(events).where(*conds).order_by(direction(events.c.id))
                        .offset(offset).limit(limit)).all()
    return int(total), list(rows)


def all_tasks(conn: Connection, job_id: str) -> list[Row[Any]]:
    return list(conn.execute(select(tasks).where(tasks.c.job_id == job_id)
                             .order_by(tasks.c.seq, tasks.c.idx)).all())


def task_metrics(conn: Connection, job_id: str, task: str) -> list[Row[Any]]:
    return list(conn.execute(select(metrics).where(metrics.c.job_id == job_id, metrics.c.task == task)
                             .order_by(metrics.c.minute)).all())


_LIGHT = [c for c in jobs.c if c.name not in ("request", "doc")]  # the large JSON columns stay behind


def active_jobs(conn: Connection) -> list[Row[Any]]:
    """Jobs the supervisor must look at: every non-terminal one, and terminal ones awaiting deletion.
    Without the request and document JSON (see `job_request`)."""
    # two index lookups (phase IN ..., and the partial index on delete_requested) instead of a table scan
    live = conn.execute(select(*_LIGHT).where(jobs.c.phase.in_(_ACTIVE))).all()
    seen = {r.id for r in live}
    doomed = [r for r in conn.execute(select(*_LIGHT).where(jobs.c.delete_requested.is_(True))) if r.id not in seen]
    return sorted([*live, *doomed], key=lambda r: r.queue_seq)


def job_request(conn: Connection, job_id: str) -> str:
    """The normalised create body a job was submitted with (JSON text)."""
    return str(conn.execute(select(jobs.c.request).where(jobs.c.id == job_id)).scalar_one())


def current_tasks(conn: Connection, job_rows: Sequence[Row[Any]]) -> dict[str, list[Row[Any]]]:
    out: dict[str, list[Row[Any]]] = defaultdict(list)
    conds = [and_(tasks.c.job_id == r.id, tasks.c.seq == r.attempt) for r in job_rows if r.attempt]
    for chunk_start in range(0, len(conds), 400):
        chunk = conds[chunk_start:chunk_start + 400]
        for t in conn.execute(select(tasks).where(or_(*chunk)).order_by(tasks.c.idx)):
            out[t.job_id].append(t)
    return out


def attempt_row(conn: Connection, job_id: str, seq: int) -> Row[Any] | None:
    return conn.execute(select(attempts).where(attempts.c.job_id == job_id, attempts.c.seq == seq)).first()


def attempts_of(conn: Connection, job_ids: Sequence[str]) -> dict[tuple[str, int], Row[Any]]:
    out = {}
    for chunk_start in range(0, len(job_ids), 500):
        chunk = list(job_ids[chunk_start:chunk_start + 500])
        for a in conn.execute(select(attempts).where(attempts.c.job_id.in_(chunk))):
            out[(a.job_id, a.seq)] = a
    return out


def fenced_nodes(conn: Connection, now_ms: int) -> dict[str, int]:
    """Nodes fenced off new placements, with the time each fence ends."""
    out: dict[str, int] = {}
    for f in conn.execute(select(fences).where(fences.c.until_ms > now_ms)):
        out[f.node] = max(out.get(f.node, 0), f.until_ms)
    return out


def all_attempts(conn: Connection, job_id: str) -> list[Row[Any]]:
    return list(conn.execute(select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.seq)).all())


def current_attempts(conn: Connection, job_rows: Sequence[Row[Any]]) -> dict[str, Row[Any]]:
    """The latest attempt of each job that has one."""
    out: dict[str, Row[Any]] = {}
    conds = [and_(attempts.c.job_id == r.id, attempts.c.seq == r.attempt) for r in job_rows if r.attempt]
    for chunk_start in range(0, len(conds), 400):
        for a in conn.execute(select(attempts).where(or_(*conds[chunk_start:chunk_start + 400]))):
            out[a.job_id] = a
    return out


def project_quotas(conn: Connection, project_id: str | None = None) -> dict[str, dict[str, int]]:
    """project -> resource -> limit, for one project or all."""
    stmt = select(quotas)
    if project_id is not None:
        stmt = stmt.where(quotas.c.project_id == project_id)
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for r in conn.execute(stmt):
        out[r.project_id][r.resource] = r.quota
    return dict(out)
