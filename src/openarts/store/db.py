"""The job store's SQLite database: one connection (WAL), transactions, migrations. Typed rows: store/rows.py.

The tables are declared with SQLAlchemy Core (store/schema.py) and created and migrated through it;
every statement the service runs goes straight to the sqlite3 connection as SQL text with `?`
parameters. Measured on the benchmark machine, a primary-key SELECT costs about 5 us on the DB-API
cursor and about 180 us through a SQLAlchemy Connection (statement building, cache key, result
metadata, Row objects); the GET and submit paths run four to ten statements each.

The service touches the database from its event-loop thread only, between awaits, so nothing else
can write between two statements of one synchronous read: reads need no transaction.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence, Sized
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, create_engine, select, text
from sqlalchemy.pool import StaticPool

from openarts.store.schema import (
    COUNT_TRIGGERS,
    LIVE_SQL,
    RETIRED_INDEXES,
    SEARCH_INDEXES,
    algorithm_versions,
    algorithms,
    experiments,
    job_counts,
    job_tags,
    jobs,
    log_metrics,
    metadata,
    notifications,
    outbox,
    schema_version,
    trials,
)

log = logging.getLogger(__name__)

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",  # WAL + NORMAL: durable across a process crash, not a power cut
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-16384",  # 16 MiB: bounds the server's memory; only full-scan searches ran faster with more
)


def placeholders(values: Sized) -> str:
    """'?,?,?' for an IN list of len(values) items."""
    return ",".join("?" * len(values))


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """Slices of at most `size` items: SQLite limits the parameters of one statement."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Database:
    """One sqlite3 connection in autocommit mode; `begin()` wraps a block in one transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            self.conn.execute(pragma)
        self.version = migrate(self.conn)

    @contextlib.contextmanager
    def begin(self) -> Iterator[sqlite3.Connection]:
        """A transaction: committed when the block ends, rolled back if it raises. Deferred: reads
        take no write lock (one process, one thread writes, so the upgrade never waits)."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # also when COMMIT itself failed; SQLite may have rolled back already
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (no transaction; see the module docstring)."""
        yield self.conn

    def close(self) -> None:
        self.conn.close()


def open_db(path: Path | str) -> Database:
    return Database(path)


# -- migrations (through SQLAlchemy, on the same connection) -----------------------------------

def _v1(conn: Connection) -> None:
    metadata.create_all(conn)


def _v2(conn: Connection) -> None:
    """Indexes for the supervisor's active-job scan (databases made by v1). It also made ix_jobs_search,
    a search index that v5 replaced (and drops), no longer declared in store/schema.py."""
    for name in ("ix_jobs_queue_seq", "ix_jobs_deleting"):
        next(i for i in jobs.indexes if i.name == name).create(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    """tasks.oom_ms, oom_reason (out-of-memory kills) and cpus (CPU affinity), for databases made
    before them (v1 creates the tables as store/schema.py declares them now)."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(tasks)")}
    for name, ddl in (("oom_ms", "INTEGER NOT NULL DEFAULT 0"), ("oom_reason", "TEXT NOT NULL DEFAULT ''"),
                      ("cpus", "TEXT NOT NULL DEFAULT ''")):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE tasks ADD COLUMN {name} {ddl}")


def _v4(conn: Connection) -> None:
    """notifications and outbox (spec.notification delivered to webhooks), for databases made before."""
    _create_tables(conn, notifications, outbox)


def _v5(conn: Connection) -> None:
    """The search indexes (store/schema.py SEARCH_INDEXES) in place of the three they replace, and the
    per-project phase counts (job_counts) with the triggers that keep them, counted once here. They are
    made as store/schema.py declares them now, which names v6's jobs.parent_id: added first."""
    _add_job_column(conn, "parent_id")
    for name in RETIRED_INDEXES:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    for index in jobs.indexes:
        if index.name in SEARCH_INDEXES:
            index.create(conn, checkfirst=True)
    job_counts.create(conn, checkfirst=True)
    for trigger in COUNT_TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger.split()[5]}")  # CREATE TRIGGER IF NOT EXISTS <name>
        conn.exec_driver_sql(trigger)
    _recount(conn)


def _create_tables(conn: Connection, *tables: Table) -> None:
    """Tables, each with its indexes, that a database may lack."""
    for table in tables:
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _add_job_column(conn: Connection, name: str) -> None:
    """A VARCHAR(36) column of jobs, '' by default, added at the end if the table lacks it."""
    if name not in {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(jobs)")}:
        conn.exec_driver_sql(f"ALTER TABLE jobs ADD COLUMN {name} VARCHAR(36) NOT NULL DEFAULT ''")


def _v6(conn: Connection) -> None:
    """Hyperparameter search: jobs.parent_id (a trial's search), the trials table, and the listed jobs
    (store/schema.py LIVE) without trials: the partial indexes and count triggers made again with it;
    log_metrics (any job's custom metrics, read from its logs); training experiments (the experiments
    table, jobs.experiment_id and its index)."""
    _add_job_column(conn, "parent_id")
    for index in jobs.indexes:
        if index.name == "uq_jobs_project_name" or index.name in SEARCH_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
            index.create(conn)
    for trigger in COUNT_TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger.split()[5]}")
        conn.exec_driver_sql(trigger)
    # trials; any job's custom metrics (reward_attrs, read from its logs); training experiments, a job's TMS
    # tags, algorithms and their published versions; then jobs.experiment_id and jobs.algorithm_id, in the
    # order store/schema.py has them (after parent_id), with their indexes
    _create_tables(conn, trials, log_metrics, experiments, job_tags, algorithms, algorithm_versions)
    for column, index_name in (("experiment_id", "ix_jobs_experiment"), ("algorithm_id", "ix_jobs_algorithm")):
        _add_job_column(conn, column)
        next(i for i in jobs.indexes if i.name == index_name).create(conn, checkfirst=True)
    _recount(conn)


def _v7(conn: Connection) -> None:
    """Heterogeneous jobs: jobs.roles (core/roles.py), '' for the plain jobs there are."""
    if "roles" not in {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(jobs)")}:
        conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN roles TEXT NOT NULL DEFAULT ''")


_COUNTED = (f"SELECT project_id, phase, count(*) FROM jobs WHERE {LIVE_SQL} "
            "GROUP BY project_id, phase")


def _recount(conn: Connection) -> bool:
    """Make job_counts what the jobs table says (one walk of an index); True if it had to. Run at every
    open: searches page from the end by these counts, so a count that drifted (a row changed by hand,
    an `INSERT OR REPLACE` the triggers do not see) would show wrong rows, not only a wrong total."""
    real = {(p, ph): n for p, ph, n in conn.exec_driver_sql(_COUNTED)}
    kept = {(p, ph): n for p, ph, n in conn.exec_driver_sql("SELECT project_id, phase, n FROM job_counts WHERE n != 0")}
    if real == kept:
        return False
    conn.exec_driver_sql("DELETE FROM job_counts")
    conn.exec_driver_sql(f"INSERT INTO job_counts (project_id, phase, n) {_COUNTED}")
    return True


# Ordered migrations; the index + 1 is the schema version it produces. Append, never edit (v2 was
# narrowed when v5 retired an index it made, and v5 adds v6's jobs.parent_id first, since it makes the
# indexes and triggers as they are declared now: the schema they end at is the same).
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]


def migrate(raw: sqlite3.Connection) -> int:
    """Bring the schema up to date, in one transaction, through a SQLAlchemy engine that borrows `raw`."""
    engine = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                schema_version.create(conn, checkfirst=True)
                current = conn.execute(select(schema_version.c.version)).scalar() or 0
                for version in range(current + 1, len(MIGRATIONS) + 1):
                    MIGRATIONS[version - 1](conn)
                    conn.execute(text("DELETE FROM schema_version"))
                    conn.execute(schema_version.insert().values(version=version))
                if current >= len(MIGRATIONS) and _recount(conn):  # (a migration counted just now)
                    log.warning("job counts did not match the jobs table; counted again")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
    finally:
        engine.dispose(close=False)
    return len(MIGRATIONS)



# -- inserts with the schema's column defaults -------------------------------------------------

@lru_cache(maxsize=64)
def _defaults(table: Table) -> dict[str, Any]:
    out = {}
    for c in table.c:
        arg = getattr(c.default, "arg", None)  # a ScalarElementColumnDefault's value
        if arg is not None and not callable(arg):
            out[c.name] = arg
    return out


@lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders(columns)})"


def insert(conn: sqlite3.Connection, table: Table, values: dict[str, Any]) -> int:
    """INSERT one row; columns not given take the defaults declared in store/schema.py. Returns the rowid."""
    row = {**_defaults(table), **values}
    cur = conn.execute(_insert_sql(table.name, tuple(row)), tuple(row.values()))
    return int(cur.lastrowid or 0)
