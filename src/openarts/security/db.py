"""security.db: credentials, users (passwords), tokens and the audit log, in their own SQLite file
(WAL) beside openarts.db, so the job store never holds a secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.pool import StaticPool

metadata = MetaData()

credentials = Table(
    "credentials", metadata,
    Column("access_key", String, primary_key=True),
    Column("secret_enc", LargeBinary, nullable=False),  # secretbox.SecretBox, bound to access_key
    Column("user_name", String, nullable=False),
    Column("projects", String, nullable=False),  # JSON array of project ids
    Column("description", String, nullable=False, default=""),
    Column("created_at", Integer, nullable=False),
    Column("revoked_at", Integer),
)

users = Table(
    "users", metadata,
    Column("user_name", String, primary_key=True),
    Column("password_hash", String, nullable=False),  # scrypt, see credentials.hash_password
    Column("updated_at", Integer, nullable=False),
)

tokens = Table(
    "tokens", metadata,
    Column("token_hash", String, primary_key=True),  # sha256 of the token: the token itself is never stored
    Column("token_id", String, nullable=False, unique=True),  # public handle for list/revoke
    Column("user_name", String, nullable=False),
    Column("project_id", String, nullable=False),
    Column("method", String, nullable=False),  # cli | password | hw_ak_sk
    Column("issued_by", String, nullable=False),  # access key, user name or "cli"
    Column("created_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False),
    Column("revoked_at", Integer),
)

audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Integer, nullable=False),  # ms since the epoch
    Column("request_id", String, nullable=False),
    Column("remote", String, nullable=False),
    Column("principal", String, nullable=False),  # access key, token id, or "anonymous"
    Column("auth", String, nullable=False),  # aksk | token | password | none | failed
    Column("user_name", String, nullable=False),
    Column("project_id", String, nullable=False),
    Column("method", String, nullable=False),
    Column("path", String, nullable=False),
    Column("target", String, nullable=False),  # the job id(s) acted on, when known
    Column("status", Integer, nullable=False),
    Column("error_code", String, nullable=False),
)
Index("audit_at", audit.c.at)
Index("audit_project_at", audit.c.project_id, audit.c.at)


def db_path(data_dir: Path) -> Path:
    return data_dir / "security.db"


def open_security_db(path: Path) -> Engine:
    """One shared connection (the server uses it from its event-loop thread only); schema created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists()
    if fresh:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    engine = create_engine(f"sqlite:///{path}", poolclass=StaticPool,
                           connect_args={"check_same_thread": False, "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    metadata.create_all(engine)
    return engine


def data_version(conn: Connection) -> int:
    """Changes whenever another connection (the CLI) committed: the cue to drop cached lookups."""
    return int(conn.exec_driver_sql("PRAGMA data_version").scalar() or 0)
