"""The store's statements stay on their indexes: no full scan of a table on the hot paths. (SQLite uses a
partial index only when the query repeats its WHERE, e.g. `delete_requested IS 1`, not `= 1`.)"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import pytest

from openarts.core import errors
from openarts.store import queries as q
from openarts.store.db import open_db

Row = namedtuple("Row", "id attempt")
ROWS = [Row("a", 3), Row("b", 1)]

CALLS: dict[str, Callable[[sqlite3.Connection], Any]] = {
    "job_details": lambda c: q.job_details(c, ROWS),
    "current_tasks": lambda c: q.current_tasks(c, ROWS),
    "current_attempts": lambda c: q.current_attempts(c, ROWS),
    "active_jobs": q.active_jobs,
    "name_exists": lambda c: q.name_exists(c, "p", "n"),
    "get_job": lambda c: q.get_job(c, "p", "x"),
    "search by phase": lambda c: q.search_jobs(c, "p", filters=[{"key": "phase", "operator": "in",
                                                                  "value": ["Failed", "Terminated"]}],
                                               sort_by="create_time", order="desc", offset=0, limit=50),
    "search, no filter": lambda c: q.search_jobs(c, "p", filters=[], sort_by="create_time", order="desc",
                                                 offset=0, limit=50),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_no_full_scan_of_jobs(name: str) -> None:
    db = open_db(":memory:")
    seen: list[str] = []
    db.conn.set_trace_callback(seen.append)
    with contextlib.suppress(errors.JobNotFound):  # get_job of an unknown id raises after its statement ran
        CALLS[name](db.conn)
    db.conn.set_trace_callback(None)
    statements = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert statements
    for sql in statements:
        plan = [row[3] for row in db.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        scans = [step for step in plan if step.startswith("SCAN ")]
        assert not scans, (sql, plan)
