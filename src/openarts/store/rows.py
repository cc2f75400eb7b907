"""Typed rows: one NamedTuple per table, its fields the table's columns in order (store/schema.py).

Readers return these instead of untyped tuples, so mypy checks every attribute the supervisor, the
scheduler's snapshot and the job document read. tests/unit/test_rows.py keeps them equal to the
schema. Booleans come back from SQLite as 0/1 (typed `int`). Times: *_ms epoch ms, *_at epoch s.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import NamedTuple, TypeVar

from openarts.core.roles import Shape, shapes


class JobRow(NamedTuple):
    id: str
    project_id: str
    workspace_id: str
    name: str
    kind: str
    description: str
    user_name: str
    create_ms: int
    update_ms: int
    phase: str
    secondary_phase: str
    start_ms: int
    end_ms: int
    running_since_ms: int
    run_ms: int
    flavor_id: str
    node_count: int
    pool_id: str
    priority: int
    preemptible: int
    engine_id: str
    request: str  # '' in rows read by the supervisor's light query (queries.active_jobs)
    doc: str  # likewise
    message: str
    terminate_requested: int
    terminate_reason: str
    preempt_requested: int
    preempt_ms: int
    preempted_by: str
    delete_requested: int
    attempt: int
    queue_seq: int
    retries_used: int
    hang_restarts: int
    recover_tier: int
    pod_retries_used: int
    parent_id: str
    experiment_id: str  # '' for none
    algorithm_id: str  # '' for none
    roles: str  # a heterogeneous job's (core/roles.py encode); '' for a plain job

    def shapes(self) -> tuple[Shape, ...]:
        """The job's roles: flavor and task count of each (a plain job: worker, flavor_id x node_count)."""
        return shapes(self.roles, self.flavor_id, self.node_count)


class AttemptRow(NamedTuple):
    job_id: str
    seq: int
    start_at: int
    end_at: int
    start_type: str
    end_reason: str
    end_related_task: str
    end_recover: str
    end_recover_before_downgrade: str
    recover_records: str  # JSON list
    master_port: int
    started: int
    opened_ms: int
    started_ms: int
    end_ms: int


class TaskRow(NamedTuple):
    job_id: str
    seq: int
    task: str
    idx: int
    node: str
    ip: str
    gpus: str  # "0,1"
    pid: int
    pid_start: float
    exit_code: int | None
    message: str
    start_ms: int
    end_ms: int
    hung_ms: int
    oom_ms: int
    oom_reason: str
    cpus: str  # "0,1"; empty: not pinned


class EventRow(NamedTuple):
    id: int
    job_id: str
    time_ms: int
    level: str
    source: str
    message: str


class NodeCountRow(NamedTuple):
    id: int
    job_id: str
    time_ms: int
    count: int  # type: ignore[assignment]  # the column's name shadows tuple.count


class MetricRow(NamedTuple):
    job_id: str
    task: str
    minute: int
    cpu_sum: float
    mem_sum: float
    samples: int


class TrialRow(NamedTuple):
    search_id: str
    number: int
    job_id: str
    params: str  # JSON {name: value}
    state: str  # core/search.py TrialState
    value: float | None
    rewards: str  # JSON {name: value}
    history: str  # JSON [[line, name, value], ...]
    message: str
    exit_code: int | None
    create_ms: int
    end_ms: int
    stop_reason: str


class LogMetricRow(NamedTuple):
    job_id: str
    task: str
    name: str  # the custom metric's (reward's) name
    last: float | None
    values: str  # JSON [[log line, value], ...]
    message: str


class ExperimentRow(NamedTuple):
    id: str
    project_id: str
    workspace_id: str
    name: str
    description: str
    create_ms: int
    update_ms: int
    job_seq: int  # serial numbers given to its jobs so far


class AlgorithmRow(NamedTuple):
    id: str
    project_id: str
    workspace_id: str
    name: str
    description: str
    ai_project: str
    user_name: str
    config: str  # JSON
    subscription_id: str  # '' until first published
    create_ms: int
    update_ms: int


class AlgorithmVersionRow(NamedTuple):
    item_version_id: str
    subscription_id: str
    project_id: str
    algorithm_id: str
    version_num: int
    name: str
    config: str  # JSON
    create_ms: int


R = TypeVar("R", bound=tuple)


class SchemaDrift(RuntimeError):
    """A query's columns are not the row type's fields: a bug, found on the first read."""


@lru_cache(maxsize=64)
def _check(cls: type, names: tuple[str, ...]) -> None:
    fields = getattr(cls, "_fields", ())
    if names != fields:
        raise SchemaDrift(f"{cls.__name__} expects columns {fields}, the query gave {names}")


def project_page(conn: sqlite3.Connection, table: str, cls: type[R], project_id: str, workspace_id: str | None,
                 column: str, order: str, offset: int, limit: int, name_part: str | None = None) -> tuple[int, list[R]]:
    """(how many match, the page) of a project's rows of `table` (experiments, algorithms): in one workspace
    if given, whose name holds `name_part` if given, in `column` order, ties broken by id."""
    where, params = "project_id = ?", [project_id]
    if workspace_id is not None:
        where += " AND workspace_id = ?"
        params.append(workspace_id)
    if name_part is not None:
        where += " AND instr(name, ?) > 0"
        params.append(name_part)
    total = int(conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0])
    direction = "ASC" if order == "asc" else "DESC"
    rows = typed(conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY {column} {direction}, "
                              f"id {direction} LIMIT ? OFFSET ?", (*params, limit, offset)), cls)
    return total, rows


def typed(cursor: sqlite3.Cursor, cls: type[R]) -> list[R]:
    """Every row of an executed cursor as `cls`; the columns must be exactly its fields, in order."""
    rows = cursor.fetchall()
    if not rows:
        return []
    _check(cls, tuple(d[0] for d in cursor.description))
    make = cls._make  # type: ignore[attr-defined]
    return [make(r) for r in rows]


_checked: set[tuple[type, str]] = set()


def typed_one(conn: sqlite3.Connection, sql: str, params: tuple[object, ...], cls: type[R]) -> R | None:
    """The first row of `sql` as `cls`. The columns are checked once per statement (a statement's columns
    do not change while the server runs; reading `cursor.description` costs a hot read ~10 us)."""
    cursor = conn.execute(sql, params)
    row = cursor.fetchone()
    if row is None:
        return None
    if (cls, sql) not in _checked:
        _check(cls, tuple(d[0] for d in cursor.description))
        _checked.add((cls, sql))
    return cls._make(row)  # type: ignore[attr-defined]
