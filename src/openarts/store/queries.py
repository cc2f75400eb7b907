"""Reads. Rows are typed named tuples (store/rows.py); callers treat them as read-only."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict, TypeVar

from openarts.core import errors
from openarts.core.phases import TERMINAL, Phase, Secondary
from openarts.core.search import SEARCH_KIND
from openarts.store.db import chunks, placeholders
from openarts.store.rows import (
    AttemptRow,
    EventRow,
    JobRow,
    MetricRow,
    NodeCountRow,
    TaskRow,
    TrialRow,
    typed,
    typed_one,
)
from openarts.store.schema import LIGHT_COLUMNS, LIVE_SQL, jobs
from openarts.store.trials import trials_of

Conn = sqlite3.Connection

_ACTIVE = tuple(p.value for p in Phase if p not in TERMINAL)
# rows of a job's latest attempt only (the job's `attempt`), however many attempts it had
_LATEST = "SELECT x.* FROM {table} x JOIN jobs j ON j.id = x.job_id AND j.attempt = x.seq"


def get_job(conn: Conn, project_id: str, job_id: str) -> JobRow:
    row = typed_one(conn, "SELECT * FROM jobs WHERE id = ? AND project_id = ?", (job_id, project_id), JobRow)
    if row is None or row.delete_requested:
        raise errors.JobNotFound(job_id)
    return row


class Details(TypedDict):
    attempts: list[AttemptRow]  # started ones, in order
    tasks: list[TaskRow]  # of the latest attempt
    node_counts: list[NodeCountRow]
    trials: NotRequired[list[TrialRow]]  # a search's (kind autosearch_job) only, by number


def job_details(conn: Conn, job_rows: Sequence[JobRow]) -> dict[str, Details]:
    """Started attempts, latest-attempt tasks and node counts of several jobs, in three queries; and the
    trials of those that are searches, in a fourth."""
    ids = [r.id for r in job_rows]
    out: dict[str, Details] = {i: {"attempts": [], "tasks": [], "node_counts": []} for i in ids}
    if not ids:
        return out
    marks = placeholders(ids)
    for a in typed(conn.execute(f"SELECT * FROM attempts WHERE job_id IN ({marks}) AND started = 1 "
                                f"ORDER BY job_id, seq", ids), AttemptRow):
        out[a.job_id]["attempts"].append(a)
    for job_id, tasks in current_tasks(conn, job_rows).items():
        out[job_id]["tasks"] = tasks
    for n in typed(conn.execute(f"SELECT * FROM node_counts WHERE job_id IN ({marks}) ORDER BY job_id, id", ids),
                   NodeCountRow):
        out[n.job_id]["node_counts"].append(n)
    searches = [r.id for r in job_rows if r.kind == SEARCH_KIND]
    for search_id in searches:
        out[search_id]["trials"] = []
    if searches:
        for search_id, trials in trials_of(conn, searches, histories=False).items():
            out[search_id]["trials"] = trials
    return out


SPLIT_MAX_ROWS = 1000  # a multi-phase page deeper than this is left to one statement (see search_jobs)
NARROW_MAX_ROWS = 2000  # a counted search with at most this many matches is answered by one walk
UNSET_KEYS = frozenset({"algorithm_name", "runtime_type"})
SORTABLE = {"create_time": "create_ms", "name": "name", "phase": "phase", "update_time": "update_ms"}
FILTER_COLUMNS = {"name": "name", "phase": "phase", "create_time": "create_ms", "kind": "kind",
                  "user_name": "user_name", "user_id": "user_name", "flavor_id": "flavor_id",
                  "pool_id": "pool_id", "workspace_id": "workspace_id",
                  "experiment_id": "experiment_id"}  # openarts' key: ModelArts documents none for experiments
assert set(SORTABLE.values()) | set(FILTER_COLUMNS.values()) <= set(jobs.c.keys())


def _like_pattern(value: Any) -> str:
    return "%" + "".join("\\" + ch if ch in "%_\\" else ch for ch in str(value)) + "%"


def search_jobs(conn: Conn, project_id: str, *, filters: list[dict[str, Any]], sort_by: str,
                order: str, offset: int, limit: int, workspace_id: str | None = None
                ) -> tuple[int, list[JobRow]]:
    conds = ["project_id = ?", LIVE_SQL]
    params: list[Any] = [project_id]
    split: tuple[int, int, list[Any]] | None = None  # a multi-value phase IN: its cond, its params, values
    driven: dict[int, str] = {}  # a tag's cond (an EXISTS, for an ordered walk) -> its form driven by the tag
    if workspace_id:
        conds.append("workspace_id = ?")
        params.append(workspace_id)
    for f in filters:
        key, op, values = f["key"], f["operator"], f["value"]
        if key == "tags":  # JobSearches' tags (core/inputs.py): every key, with one of its values
            for tag, tag_values in values:
                value_in = f" AND value IN ({placeholders(tag_values)})" if tag_values else ""
                driven[len(conds)] = f"id IN (SELECT job_id FROM job_tags WHERE key = ?{value_in})"
                conds.append(f"EXISTS (SELECT 1 FROM job_tags WHERE job_id = jobs.id AND key = ?{value_in})")
                params.extend([tag, *tag_values])
            continue
        column = FILTER_COLUMNS.get(key)
        if column is None and key in UNSET_KEYS:  # documented keys no local job has a value for
            conds.append("1" if op == "not" else "0")
            continue
        if column is None:
            raise errors.UnsupportedFilter(f"Unsupported filter key {key!r}.")
        if op == "like":
            conds.append(f"{column} LIKE ? ESCAPE '\\'")
            params.append(_like_pattern(values[0]))
        elif op in ("in", "not"):
            conds.append(f"{column} {'NOT IN' if op == 'not' else 'IN'} ({placeholders(values)})")
            if op == "in" and key == "phase" and len(values) > 1 and split is None:
                split = (len(conds) - 1, len(params), list(values))
            params.extend(values)
        elif op == "between":
            if key != "create_time" or len(values) != 2:
                raise errors.UnsupportedFilter("'between' takes create_time and two values.")
            try:
                lo, hi = int(values[0]), int(values[1])
            except (TypeError, ValueError) as exc:
                raise errors.UnsupportedFilter("'between' values must be integers (ms).") from exc
            conds.append(f"{column} BETWEEN ? AND ?")
            params.extend((lo, hi))
        else:
            raise errors.UnsupportedFilter(f"Unsupported filter operator {op!r}.")
    where = " AND ".join(conds)
    column, direction = SORTABLE[sort_by], "ASC" if order == "asc" else "DESC"
    order_by = f"ORDER BY {column} {direction}, id {direction}"
    # One statement over several phases walks the sort's index, checking the phase in it (`+phase`: not
    # the phases' own indexes, which would gather every row of those phases to sort them).
    walk = where if split is None else " AND ".join([*conds[:split[0]], "+" + conds[split[0]], *conds[split[0] + 1:]])
    total = _counted(conn, project_id, filters, workspace_id)
    if driven:  # a tag narrows: its matches counted, and a few found, through the tag's index (store/tags.py);
        # many are paged by the ordered walk, which meets the first of them soon
        by_tag = " AND ".join(["+project_id = ?", *(driven.get(i, c) for i, c in enumerate(conds) if i)])
        total = int(conn.execute(f"SELECT count(*) FROM jobs WHERE {by_tag}", params).fetchone()[0])
        if total <= NARROW_MAX_ROWS:
            ids = [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE {by_tag} {order_by}", params)]
            return total, _by_ids(conn, ids[offset:offset + limit])
    if total is None:  # a name search, say: one walk finds every match of a narrow one, in order
        ids = [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE {walk} {order_by} LIMIT ?",
                                          (*params, NARROW_MAX_ROWS + 1))]
        if len(ids) <= NARROW_MAX_ROWS:
            return len(ids), _by_ids(conn, ids[offset:offset + limit])
        total = int(conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0])
    if split is None or offset + limit > SPLIT_MAX_ROWS:
        return total, _page(conn, walk, params, column, order, offset, limit, total)
    # phase IN (a, b, ...): one index walk per phase (each already in order, offset + limit rows at
    # most), merged here. A single statement would walk the whole project in create_time order,
    # matching or not; for deep pages it is the better plan, and it keeps the rows out of memory.
    ci, at, values = split
    one_phase = " AND ".join([*conds[:ci], "phase = ?", *conds[ci + 1:]])
    merged: list[JobRow] = []
    for value in dict.fromkeys(values):
        merged.extend(typed(conn.execute(
            f"SELECT * FROM jobs WHERE {one_phase} {order_by} LIMIT ?",
            (*params[:at], value, *params[at + len(values):], offset + limit)), JobRow))
    merged.sort(key=lambda r: (getattr(r, column), r.id), reverse=order != "asc")
    return int(total), merged[offset:offset + limit]


def _counted(conn: Conn, project_id: str, filters: list[dict[str, Any]], workspace_id: str | None) -> int | None:
    """How many jobs match, from the project's phase counts, when nothing but one phase filter narrows
    the project; None otherwise (they must be counted: in an index, which holds the phase and the name)."""
    if workspace_id or len(filters) > 1 or any(f["key"] != "phase" or f["operator"] != "in" for f in filters):
        return None
    counts = project_phase_counts(conn, project_id)
    phases = {str(v) for v in filters[0]["value"]} if filters else set(counts)
    return sum(counts.get(p, 0) for p in phases)


def _by_ids(conn: Conn, ids: list[str]) -> list[JobRow]:
    """The rows of `ids`, in that order."""
    if not ids:
        return []
    found = {r.id: r for r in typed(conn.execute(f"SELECT * FROM jobs WHERE id IN ({placeholders(ids)})", ids),
                                    JobRow)}
    return [found[i] for i in ids]


def _page(conn: Conn, where: str, params: list[Any], column: str, order: str, offset: int, limit: int,
          total: int) -> list[JobRow]:
    """Matches offset..offset+limit in (column, id) order, `total` of them. An offset is skipped one index
    entry at a time, so a page nearer the end is read backwards from the end and turned round: the last
    page of 100,000 jobs costs what the first does. The order is total (ids are unique)."""
    if offset >= total:
        return []
    backwards = total - offset < offset + limit
    asc = (order == "asc") != backwards
    direction = "ASC" if asc else "DESC"
    if backwards:
        offset, limit = max(0, total - offset - limit), min(offset + limit, total) - offset
    rows = typed(conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY {column} {direction}, id {direction} "
                              f"LIMIT ? OFFSET ?", (*params, limit, offset)), JobRow)
    return rows[::-1] if backwards else rows


def name_exists(conn: Conn, project_id: str, name: str) -> bool:
    return conn.execute(f"SELECT 1 FROM jobs WHERE project_id = ? AND name = ? AND {LIVE_SQL}",
                        (project_id, name)).fetchone() is not None


def job_events(conn: Conn, job_id: str, *, offset: int, limit: int, order: str,
               start_ms: int | None, end_ms: int | None, level: str | None, pattern: str | None
               ) -> tuple[int, list[EventRow]]:
    conds: list[str] = ["job_id = ?"]
    params: list[Any] = [job_id]
    if start_ms is not None:
        conds.append("time_ms >= ?")
        params.append(start_ms)
    if end_ms is not None:
        conds.append("time_ms <= ?")
        params.append(end_ms)
    if level:
        conds.append("level = ?")
        params.append(level)
    if pattern:
        conds.append("message LIKE ? ESCAPE '\\'")
        params.append(_like_pattern(pattern))
    where = " AND ".join(conds)
    total = conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()[0]
    direction = "ASC" if order == "asc" else "DESC"
    rows = typed(conn.execute(f"SELECT * FROM events WHERE {where} ORDER BY id {direction} LIMIT ? OFFSET ?",
                              (*params, limit, offset)), EventRow)
    return int(total), rows


def all_tasks(conn: Conn, job_id: str) -> list[TaskRow]:
    return typed(conn.execute("SELECT * FROM tasks WHERE job_id = ? ORDER BY seq, idx", (job_id,)), TaskRow)


def task_metrics(conn: Conn, job_id: str, task: str) -> list[MetricRow]:
    return typed(conn.execute("SELECT * FROM metrics WHERE job_id = ? AND task = ? ORDER BY minute",
                              (job_id, task)), MetricRow)



def active_jobs(conn: Conn) -> list[JobRow]:
    """Jobs the supervisor must look at: every non-terminal one, and terminal ones awaiting deletion,
    in queue order. Without the request and document JSON (see `job_request`)."""
    # two index lookups (phase IN ..., and the partial index on delete_requested) instead of a table scan
    live = typed(conn.execute(f"SELECT {LIGHT_COLUMNS} FROM jobs WHERE phase IN ({placeholders(_ACTIVE)})", _ACTIVE),
                 JobRow)
    seen = {r.id for r in live}
    doomed = [r for r in typed(conn.execute(f"SELECT {LIGHT_COLUMNS} FROM jobs WHERE delete_requested IS 1"), JobRow)
              if r.id not in seen]
    return sorted([*live, *doomed], key=lambda r: r.queue_seq)


def job_request(conn: Conn, job_id: str) -> str:
    """The normalised create body a job was submitted with (JSON text)."""
    return str(conn.execute("SELECT request FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])


def job_roles(conn: Conn, job_id: str) -> str | None:
    """A job's jobs.roles ('' for a plain job; core/roles.py), or None when there is no such job."""
    row = conn.execute("SELECT roles FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


R = TypeVar("R", AttemptRow, TaskRow)


def _of_latest_attempt(conn: Conn, table: str, cls: type[R], job_rows: Sequence[JobRow], order: str) -> list[R]:
    latest = {r.id: r.attempt for r in job_rows if r.attempt}
    out: list[R] = []
    for chunk in chunks(list(latest)):
        out.extend(r for r in typed(conn.execute(
            f"{_LATEST.format(table=table)} WHERE x.job_id IN ({placeholders(chunk)}) ORDER BY {order}", chunk), cls)
            if r.seq == latest[r.job_id])
    return out


def current_tasks(conn: Conn, job_rows: Sequence[JobRow]) -> dict[str, list[TaskRow]]:
    """The tasks of each job's latest attempt, in worker order."""
    out: dict[str, list[TaskRow]] = defaultdict(list)
    for t in _of_latest_attempt(conn, "tasks", TaskRow, job_rows, "x.job_id, x.idx"):
        out[t.job_id].append(t)
    return out


def current_attempts(conn: Conn, job_rows: Sequence[JobRow]) -> dict[str, AttemptRow]:
    """The latest attempt of each job that has one."""
    return {a.job_id: a for a in _of_latest_attempt(conn, "attempts", AttemptRow, job_rows, "x.job_id")}


def fenced_nodes(conn: Conn, now_ms: int) -> dict[str, int]:
    """Nodes fenced off new placements, with the time each fence ends."""
    out: dict[str, int] = {}
    for node, until in conn.execute("SELECT node, until_ms FROM fences WHERE until_ms > ?", (now_ms,)):
        out[node] = max(out.get(node, 0), until)
    return out


def all_attempts(conn: Conn, job_id: str) -> list[AttemptRow]:
    return typed(conn.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY seq", (job_id,)), AttemptRow)


def project_quotas(conn: Conn, project_id: str | None = None) -> dict[str, dict[str, int]]:
    """project -> resource -> limit, for one project or all."""
    if project_id is None:
        cur = conn.execute("SELECT project_id, resource, quota FROM quotas")
    else:
        cur = conn.execute("SELECT project_id, resource, quota FROM quotas WHERE project_id = ?", (project_id,))
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for project, resource, quota in cur:
        out[project][resource] = quota
    return dict(out)


def task_oom(conn: Conn, job_id: str, seq: int, task: str) -> tuple[int, str]:
    """(oom_ms, oom_reason) of one task as stored now (the metrics sampler may have marked it since the
    pass loaded its tasks)."""
    row = conn.execute("SELECT oom_ms, oom_reason FROM tasks WHERE job_id = ? AND seq = ? AND task = ?",
                       (job_id, seq, task)).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


def phase_counts(conn: Conn) -> dict[str, int]:
    """Jobs by phase, deleted ones left out (an index walk: ix_jobs_phase, and the partial index of
    the deleting)."""
    counts = {str(p): int(n) for p, n in conn.execute("SELECT phase, count(*) FROM jobs GROUP BY phase")}
    for p, n in conn.execute("SELECT phase, count(*) FROM jobs WHERE delete_requested GROUP BY phase"):
        counts[str(p)] -= int(n)
    return counts


def queue_depth(conn: Conn) -> int:
    """Jobs waiting in the queue (Pending/Queuing); a pending search holds no place in it (its trials do)."""
    row = conn.execute("SELECT count(*) FROM jobs WHERE phase = ? AND secondary_phase = ? AND NOT delete_requested "
                       "AND kind != ?", (Phase.PENDING.value, Secondary.QUEUING.value, SEARCH_KIND)).fetchone()
    return int(row[0])


def project_phase_counts(conn: Conn, project_id: str) -> dict[str, int]:
    """A project's live jobs by phase: its rows of job_counts, which triggers on the jobs table keep
    (store/schema.py COUNT_TRIGGERS), the phases it has jobs in only."""
    return {str(p): int(n) for p, n in conn.execute(
        "SELECT phase, n FROM job_counts WHERE project_id = ? AND n > 0", (project_id,))}
