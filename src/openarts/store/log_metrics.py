"""A job's custom metrics (store/schema.py `log_metrics`): what its reward_attrs' regexes read from each
task's log of its current attempt. Written by the metrics sampler (supervisor/log_metrics.py), each row
replaced whole (a re-read from the start writes the same rows again), read by the metrics endpoint
(service/observe.py); removed with the job (store/jobs.py purge_job)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from openarts.store.db import chunks, placeholders
from openarts.store.rows import LogMetricRow, typed

Conn = sqlite3.Connection

# a job deleted while its log was read gets no rows back: only a job that exists is written
_PUT = ('INSERT INTO log_metrics (job_id, task, name, last, "values", message) '
        "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?) "
        'ON CONFLICT (job_id, task, name) DO UPDATE SET last = excluded.last, "values" = excluded."values", '
        "message = excluded.message")


def put(conn: Conn, rows: Iterable[LogMetricRow]) -> None:
    """Record (replace) each (job, task, metric)'s values, for jobs that still exist."""
    conn.executemany(_PUT, [(*r, r.job_id) for r in rows])


def of_task(conn: Conn, job_id: str, task: str) -> list[LogMetricRow]:
    """A task's custom metrics as last recorded, by name."""
    return typed(conn.execute("SELECT * FROM log_metrics WHERE job_id = ? AND task = ? ORDER BY name",
                              (job_id, task)), LogMetricRow)


def job_requests(conn: Conn, job_ids: Sequence[str]) -> dict[str, str]:
    """The stored requests (JSON text) of the jobs that exist among `job_ids`."""
    out: dict[str, str] = {}
    for chunk in chunks(list(job_ids)):
        out.update(conn.execute(f"SELECT id, request FROM jobs WHERE id IN ({placeholders(chunk)})", chunk))
    return out
