"""The audit log: one row per mutating request (who, what, when, result), refused ones included."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from openarts.security import db


@dataclass(frozen=True)
class AuditRecord:
    at: int
    request_id: str
    remote: str
    principal: str
    auth: str
    user_name: str
    project_id: str
    method: str
    path: str
    target: str
    status: int
    error_code: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def record(conn: Connection, rec: AuditRecord) -> None:
    conn.execute(db.audit.insert().values(**asdict(rec)))


def list_records(engine: Engine, project_id: str | None = None, since_ms: int | None = None,
                 limit: int = 100) -> list[AuditRecord]:
    """The newest `limit` records (optionally of one project, or since a time), oldest first."""
    t = db.audit
    q = select(t).order_by(t.c.id.desc()).limit(limit)
    if project_id:
        q = q.where(t.c.project_id == project_id)
    if since_ms is not None:
        q = q.where(t.c.at >= since_ms)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [AuditRecord(r.at, r.request_id, r.remote, r.principal, r.auth, r.user_name, r.project_id, r.method,
                        r.path, r.target, r.status, r.error_code) for r in reversed(rows)]
