"""Opening the SQLite database (WAL) and bringing its schema up to date."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.pool import StaticPool

from openarts.store.schema import jobs, metadata, schema_version


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)


def _v2(conn: Connection) -> None:
    """Indexes for the supervisor's active-job scan and for searches (databases made by v1)."""
    for name in ("ix_jobs_queue_seq", "ix_jobs_deleting", "ix_jobs_search"):
        next(i for i in jobs.indexes if i.name == name).create(conn, checkfirst=True)


# Ordered migrations; the index + 1 is the schema version it produces. Append, never edit.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]


def open_db(path: Path | str) -> Engine:
    """One shared connection: the service touches the database from its event-loop thread only."""
    url = "sqlite://" if str(path) == ":memory:" else f"sqlite:///{path}"
    engine = create_engine(
        url,
        poolclass=StaticPool,
        connect_args={"check_same_thread": False, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # deferred: reads take no write lock; one process, one thread writes, so upgrades never wait
        conn.exec_driver_sql("BEGIN")

    migrate(engine)
    return engine


def migrate(engine: Engine) -> int:
    with engine.begin() as conn:
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(select(schema_version.c.version)).scalar() or 0
        for version in range(current + 1, len(MIGRATIONS) + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(text("DELETE FROM schema_version"))
            conn.execute(schema_version.insert().values(version=version))
        return len(MIGRATIONS)
