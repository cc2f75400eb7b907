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
from openarts.core.phases import Phase
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import open_db

Row = namedtuple("Row", "id attempt kind")
ROWS = [Row("a", 3, "job"), Row("b", 1, "autosearch_job")]  # a search's details read its trials too

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


def _search(sort_by: str, filters: list[dict[str, Any]], offset: int = 0) -> Callable[[sqlite3.Connection], Any]:
    return lambda c: q.search_jobs(c, "p", filters=filters, sort_by=sort_by, order="desc", offset=offset, limit=20)


PHASE = {"key": "phase", "operator": "in", "value": ["Failed"]}
PHASES = {"key": "phase", "operator": "in", "value": ["Failed", "Completed"]}
NAME = {"key": "name", "operator": "like", "value": ["x"]}
# The console's job list (store/schema.py SEARCH_INDEXES): every sort, alone, in a phase, in phases deep
# enough for one statement (`+phase`), with a name search; none may sort its matches.
SEARCHES = {f"{sort} {label}": _search(sort, filters, offset) for sort in q.SORTABLE
            for label, filters, offset in (("", [], 0), ("in a phase", [PHASE], 0), ("in phases", [PHASES], 0),
                                          ("in phases, deep", [PHASES], 5000), ("by name", [NAME], 0),
                                          ("by name in a phase", [NAME, PHASE], 0))}
CALLS.update(SEARCHES)


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


@pytest.mark.parametrize("name", list(SEARCHES))
def test_search_pages_walk_an_index_in_order(name: str) -> None:
    """A page is an index walk in the sort's order, stopped at its last row: no matching row is gathered to be
    sorted (a temporary B-tree), and no row is read to check the phase or the name (both are in the index)."""
    db = open_db(":memory:")
    spec = parse_job({"metadata": {"name": "x1"}, "algorithm": {"command": "true"},
                      "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}, build_catalog({}, gpus=[]))
    with db.begin() as conn:  # a job the name search finds, and counts that make the deep page's offset fit
        w.create_job(conn, "j1", "p", "u", spec, {}, 1)
        w.transition(conn, "j1", Phase.CREATING, Phase.PENDING, at_ms=2)
        w.transition(conn, "j1", Phase.PENDING, Phase.FAILED, at_ms=3)
        conn.execute("UPDATE job_counts SET n = 9000 WHERE project_id = 'p'")
        conn.execute("INSERT INTO job_counts (project_id, phase, n) VALUES ('p', 'Completed', 9000)")
    seen: list[str] = []
    db.conn.set_trace_callback(seen.append)
    SEARCHES[name](db.conn)
    db.conn.set_trace_callback(None)
    pages = [s for s in seen if s.startswith(("SELECT * FROM jobs WHERE project_id", "SELECT id FROM jobs"))]
    assert pages
    for sql in pages:
        plan = [row[3] for row in db.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        assert not [step for step in plan if "TEMP B-TREE" in step], (sql, plan)
        assert any("ix_jobs_live_" in step or "uq_jobs_project_name" in step for step in plan), (sql, plan)
