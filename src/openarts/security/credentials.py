"""Access keys (AK/SK) bound to projects and a user name, and optional user passwords.

The secret key is generated here, shown once by the caller, and stored only sealed by the
SecretBox (AES-GCM under the master key). Passwords are stored as scrypt hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from openarts.security import db
from openarts.security.secretbox import SecretBox

AK_ALPHABET = string.ascii_uppercase + string.digits
SK_ALPHABET = string.ascii_letters + string.digits
AK_LENGTH = 20
SK_LENGTH = 40
PROJECT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class CredentialError(ValueError):
    """A bad argument to a credentials operation (shown to the CLI user as is)."""


@dataclass(frozen=True)
class Credential:
    access_key: str
    user_name: str
    projects: tuple[str, ...]
    description: str
    created_at: int
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_json(self) -> dict[str, Any]:
        return {"access_key": self.access_key, "user_name": self.user_name, "projects": list(self.projects),
                "description": self.description, "created_at": self.created_at, "revoked_at": self.revoked_at}


def now_ms() -> int:
    return int(time.time() * 1000)


def _row(r: Any) -> Credential:
    return Credential(r.access_key, r.user_name, tuple(json.loads(r.projects)), r.description, r.created_at,
                      r.revoked_at)


def check_project(project_id: str) -> str:
    if not PROJECT_RE.match(project_id):
        raise CredentialError(f"invalid project id {project_id!r}: 1-64 letters, digits, '_' or '-'")
    return project_id


def check_user(user_name: str) -> str:
    if not USER_RE.match(user_name):
        raise CredentialError(f"invalid user name {user_name!r}: 1-64 letters, digits, '_', '.', '@' or '-'")
    return user_name


def create(engine: Engine, box: SecretBox, projects: list[str], user_name: str,
           description: str = "") -> tuple[Credential, str]:
    """A new access key for `user_name` in `projects`; returns it with its secret key (shown once)."""
    if not projects:
        raise CredentialError("at least one --project is required")
    clean = tuple(dict.fromkeys(check_project(p) for p in projects))
    check_user(user_name)
    access_key = "".join(secrets.choice(AK_ALPHABET) for _ in range(AK_LENGTH))
    secret_key = "".join(secrets.choice(SK_ALPHABET) for _ in range(SK_LENGTH))
    cred = Credential(access_key, user_name, clean, description, now_ms(), None)
    with engine.begin() as conn:
        conn.execute(db.credentials.insert().values(
            access_key=access_key, secret_enc=box.seal(secret_key, access_key), user_name=user_name,
            projects=json.dumps(list(clean)), description=description, created_at=cred.created_at))
    return cred, secret_key


def list_all(engine: Engine) -> list[Credential]:
    with engine.connect() as conn:
        rows = conn.execute(select(db.credentials).order_by(db.credentials.c.created_at)).all()
    return [_row(r) for r in rows]


def revoke(engine: Engine, access_key: str) -> bool:
    """Revoke an access key (and with it every token it issued). False when it is unknown or already revoked."""
    t = db.credentials
    with engine.begin() as conn:
        done = conn.execute(update(t).where(t.c.access_key == access_key, t.c.revoked_at.is_(None))
                            .values(revoked_at=now_ms())).rowcount
        if done:
            conn.execute(update(db.tokens).where(db.tokens.c.issued_by == access_key,
                                                 db.tokens.c.revoked_at.is_(None)).values(revoked_at=now_ms()))
    return bool(done)


def any_exist(conn: Connection) -> bool:
    """Whether the store holds any credential (revoked ones count): then the server enforces auth."""
    return conn.execute(select(db.credentials.c.access_key).limit(1)).first() is not None


def lookup(conn: Connection, box: SecretBox, access_key: str) -> tuple[Credential, str] | None:
    """The credential and its secret key, or None when the access key is unknown."""
    r = conn.execute(select(db.credentials).where(db.credentials.c.access_key == access_key)).first()
    if r is None:
        return None
    return _row(r), box.open(r.secret_enc, r.access_key)


def user_projects(conn: Connection, user_name: str) -> set[str]:
    """Projects the user may act in: those of their active access keys."""
    t = db.credentials
    rows = conn.execute(select(t.c.projects).where(t.c.user_name == user_name, t.c.revoked_at.is_(None))).all()
    return {p for r in rows for p in json.loads(r.projects)}


# -- passwords -----------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(stored: str, password: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(want, got)


def set_password(engine: Engine, user_name: str, password: str) -> None:
    check_user(user_name)
    if len(password) < 8:
        raise CredentialError("the password must have at least 8 characters")
    values = {"user_name": user_name, "password_hash": hash_password(password), "updated_at": now_ms()}
    with engine.begin() as conn:
        conn.execute(db.users.delete().where(db.users.c.user_name == user_name))
        conn.execute(db.users.insert().values(**values))


def password_hash(conn: Connection, user_name: str) -> str | None:
    r = conn.execute(select(db.users.c.password_hash).where(db.users.c.user_name == user_name)).first()
    return None if r is None else str(r.password_hash)
