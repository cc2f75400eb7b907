"""X-Auth-Token tokens: issued for one user in one project, with an expiry, revocable.

Only the token's SHA-256 is stored; `token_id` (a prefix of that hash) names it in list/revoke and the
audit log. A token is valid while it is unexpired, unrevoked, and its user still holds an active
access key for its project.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from openarts.security import db
from openarts.security.credentials import check_project, check_user, now_ms

PREFIX = "oat1."
ID_CHARS = 20


@dataclass(frozen=True)
class Token:
    token_id: str
    user_name: str
    project_id: str
    method: str
    issued_by: str
    created_at: int
    expires_at: int
    revoked_at: int | None

    def as_json(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "user_name": self.user_name, "project_id": self.project_id,
                "method": self.method, "issued_by": self.issued_by, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def _row(r: Any) -> Token:
    return Token(r.token_id, r.user_name, r.project_id, r.method, r.issued_by, r.created_at, r.expires_at,
                 r.revoked_at)


def issue(conn: Connection, user_name: str, project_id: str, ttl_seconds: float, method: str,
          issued_by: str) -> tuple[str, Token]:
    """A new token (the secret string, shown once) and its record. `conn` must be in a transaction."""
    check_user(user_name)
    check_project(project_id)
    if ttl_seconds <= 0:
        raise ValueError("the token lifetime must be positive")
    token = PREFIX + secrets.token_urlsafe(32)
    digest = token_hash(token)
    created = now_ms()
    rec = Token(digest[:ID_CHARS], user_name, project_id, method, issued_by, created,
                created + int(ttl_seconds * 1000), None)
    conn.execute(db.tokens.insert().values(token_hash=digest, token_id=rec.token_id, user_name=user_name,
                                           project_id=project_id, method=method, issued_by=issued_by,
                                           created_at=created, expires_at=rec.expires_at))
    return token, rec


def lookup(conn: Connection, token: str) -> Token | None:
    r = conn.execute(select(db.tokens).where(db.tokens.c.token_hash == token_hash(token))).first()
    return None if r is None else _row(r)


def list_all(engine: Engine, include_expired: bool = False) -> list[Token]:
    q = select(db.tokens).order_by(db.tokens.c.created_at)
    if not include_expired:
        q = q.where(db.tokens.c.expires_at > now_ms(), db.tokens.c.revoked_at.is_(None))
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(q).all()]


def revoke(engine: Engine, token_id: str) -> bool:
    t = db.tokens
    with engine.begin() as conn:
        return bool(conn.execute(update(t).where(t.c.token_id == token_id, t.c.revoked_at.is_(None))
                                 .values(revoked_at=now_ms())).rowcount)
