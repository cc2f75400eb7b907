"""Typed rows stay equal to the schema, on a new database and on one migrated from an older version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openarts.store import rows
from openarts.store.db import open_db
from openarts.store.schema import (
    algorithm_versions,
    algorithms,
    attempts,
    events,
    experiments,
    jobs,
    log_metrics,
    metrics,
    node_counts,
    tasks,
)

PAIRS = [(rows.JobRow, jobs), (rows.AttemptRow, attempts), (rows.TaskRow, tasks), (rows.EventRow, events),
         (rows.NodeCountRow, node_counts), (rows.MetricRow, metrics), (rows.LogMetricRow, log_metrics),
         (rows.ExperimentRow, experiments), (rows.AlgorithmRow, algorithms),
         (rows.AlgorithmVersionRow, algorithm_versions)]


@pytest.mark.parametrize(("row", "table"), PAIRS, ids=[t.name for _, t in PAIRS])
def test_row_fields_are_the_tables_columns_in_order(row: type, table: object) -> None:
    assert row._fields == tuple(c.name for c in table.c)  # type: ignore[attr-defined]


def test_a_database_migrated_from_v2_reads_as_typed_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    open_db(path).close()
    raw = sqlite3.connect(path)  # turn it into a v2 database: tasks without the v3 columns
    new = ("oom_ms", "oom_reason", "cpus")
    old_cols = ", ".join(c.name for c in tasks.c if c.name not in new)
    raw.executescript(f"CREATE TABLE t2 AS SELECT {old_cols} FROM tasks; DROP TABLE tasks; "
                      f"ALTER TABLE t2 RENAME TO tasks; UPDATE schema_version SET version = 2;")
    raw.execute("INSERT INTO tasks (job_id, seq, task, idx, node, ip, gpus, pid, pid_start, message, start_ms, "
                "end_ms, hung_ms) VALUES ('j', 1, 'worker-0', 0, 'local', '127.0.0.1', '', 1, 0.0, '', 0, 0, 0)")
    raw.commit()
    raw.close()
    db = open_db(path)
    with db.connect() as conn:
        got = rows.typed(conn.execute("SELECT * FROM tasks"), rows.TaskRow)
    assert got[0].task == "worker-0" and got[0].oom_ms == 0 and got[0].cpus == ""


def test_a_database_from_before_experiments_reads_jobs_as_typed_rows(tmp_path: Path) -> None:
    """v6 adds jobs.experiment_id after parent_id (and the experiments table) to a database without them."""
    path = tmp_path / "old.db"
    open_db(path).close()
    raw = sqlite3.connect(path)
    raw.executescript("DROP INDEX ix_jobs_experiment; DROP INDEX ix_jobs_algorithm; "
                      "ALTER TABLE jobs DROP COLUMN roles; "
                      "ALTER TABLE jobs DROP COLUMN algorithm_id; "
                      "ALTER TABLE jobs DROP COLUMN experiment_id; DROP TABLE experiments; DROP TABLE algorithms; "
                      "DROP TABLE algorithm_versions; UPDATE schema_version SET version = 5;")
    raw.close()
    db = open_db(path)
    with db.connect() as conn:
        got = rows.typed(conn.execute("SELECT * FROM jobs"), rows.JobRow)
        assert got == []
        columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
        assert columns == list(rows.JobRow._fields)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_jobs_experiment", "uq_experiments_project_name", "uq_algorithms_project_name",
                "ix_algorithm_versions_subscription"} <= indexes


def test_a_database_from_before_heterogeneous_jobs_gets_their_roles_column(tmp_path: Path) -> None:
    """v7 adds jobs.roles (core/roles.py), '' for the plain jobs already there."""
    path = tmp_path / "old.db"
    open_db(path).close()
    raw = sqlite3.connect(path)
    raw.executescript("ALTER TABLE jobs DROP COLUMN roles; UPDATE schema_version SET version = 6;")
    values: dict[str, object] = {name: 0 if kind.upper() in ("INTEGER", "BOOLEAN") else ""
                                 for _, name, kind, *_ in raw.execute("PRAGMA table_info(jobs)")}
    values.update(id="j", flavor_id="f", node_count=2)
    raw.execute(f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()))
    raw.commit()
    raw.close()
    db = open_db(path)
    assert db.version == 7
    with db.connect() as conn:
        assert [r[1] for r in conn.execute("PRAGMA table_info(jobs)")] == list(rows.JobRow._fields)
        (job,) = rows.typed(conn.execute("SELECT * FROM jobs"), rows.JobRow)
    assert job.roles == "" and [s.role for s in job.shapes()] == ["worker"] and job.shapes()[0].count == 2


def test_a_query_that_drifts_from_its_row_type_is_refused() -> None:
    db = open_db(":memory:")
    with db.connect() as conn:
        conn.execute("INSERT INTO node_counts (job_id, time_ms, count) VALUES ('j', 1, 2)")
        with pytest.raises(rows.SchemaDrift):
            rows.typed(conn.execute("SELECT job_id, time_ms FROM node_counts"), rows.NodeCountRow)
