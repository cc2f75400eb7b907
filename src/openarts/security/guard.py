"""The server's authentication and authorization decisions, independent of ASGI.

`Guard.authenticate` turns a request (method, raw path, query, headers, body) into a `Principal` or
raises one of the domain errors in core/errors.py (the API maps them to APIG/ModelArts codes).
Lookups are cached and the caches dropped whenever security.db changes under the server (the CLI
created or revoked something), so a revocation takes effect on the very next request.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine

from openarts.core import errors
from openarts.security import audit as audit_log
from openarts.security import credentials as creds
from openarts.security import db, signer
from openarts.security import tokens as toks
from openarts.security.config import SecurityConfig
from openarts.security.ratelimit import RateLimiter
from openarts.security.replay import ReplayCache
from openarts.security.secretbox import SecretBox, load_master_key

log = logging.getLogger("openarts.security")

IAM = "Incorrect IAM authentication information: "
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_POSTS = ("/training-job-searches", "/resource-instances/filter", "/resource-instances/count")  # read


def is_mutating(method: str, path: str) -> bool:
    """Whether a request can change state: audited, and guarded by the replay cache (a repeated read
    does no harm; only replay_protection = "strict" refuses one)."""
    return method.upper() not in SAFE_METHODS and not path.endswith(READ_ONLY_POSTS)


MAX_CACHE = 10_000  # entries in each lookup cache and in the password-failure table
USER_KEY_CHARS = 65  # a user name is at most 64 characters: longer ones name no user and share one entry


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    kind: str  # aksk | token | none
    principal_id: str  # access key, token id, or "anonymous"
    user_name: str
    projects: frozenset[str] = field(default_factory=frozenset)

    @property
    def rate_key(self) -> str:
        """What the rate limiter counts: the access key, or kind:user for tokens."""
        return self.principal_id if self.kind == "aksk" else f"{self.kind}:{self.user_name}"


ANONYMOUS = Principal("none", "anonymous", "")


@dataclass(slots=True)
class RequestView:
    method: str
    raw_path: str  # as received, percent-encoded, without the query
    query: str  # as received
    headers: Mapping[str, str]  # lowercase names; a name sent twice maps to None-like "" (see multi)
    body: bytes
    project: str | None  # the {project_id} of a /v2/{project_id}/... path
    multi: frozenset[str] = frozenset()  # header names that were sent more than once


@dataclass(frozen=True, slots=True)
class _Key:
    """A cached access key: the credential, its secret key (a keyed HMAC) and its principal."""

    cred: creds.Credential
    mac: hmac.HMAC
    principal: Principal


class Pending(NamedTuple):
    """What an accepted request still has to do once admitted: remember its signature."""

    signature: str = ""
    until: float = 0.0


NOTHING_PENDING = Pending()


class Guard:
    def __init__(self, cfg: SecurityConfig, engine: Engine | None = None, box: SecretBox | None = None) -> None:
        self.cfg = cfg
        self.engine = engine or db.open_security_db(cfg.db_path)
        self._box = box
        self.replay = ReplayCache()
        self._replay_reads = cfg.replay_protection == "strict"
        self._replay_writes = cfg.replay_protection in ("writes", "strict")
        self.limiter = RateLimiter(cfg.rate_limit_per_second, cfg.rate_limit_burst)
        self._version = -1
        self._raw: Any = None
        self._enforcing: bool | None = None
        self._keys: dict[str, _Key] = {}
        self._tokens: dict[str, toks.Token | None] = {}
        self._user_projects: dict[str, set[str]] = {}
        self._password_failures: dict[str, tuple[int, float]] = {}

    # -- caches ----------------------------------------------------------------------------------

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox(load_master_key(self.cfg.data_dir, self.cfg.master_key_file))
        return self._box

    def refresh(self) -> None:
        if self._raw is None:  # StaticPool: this is the engine's one sqlite3 connection, held for good
            self._raw = self.engine.raw_connection().driver_connection
        version = int(self._raw.execute("PRAGMA data_version").fetchone()[0])  # a few microseconds
        if version != self._version:
            self.invalidate()
            self._version = version

    def invalidate(self) -> None:
        self._enforcing = None
        self._keys.clear()
        self._tokens.clear()
        self._user_projects.clear()

    def enforcing(self) -> bool:
        """True once security.db holds any credential (checked again whenever the file changes)."""
        self.refresh()
        if self._enforcing is None:
            with self.engine.connect() as conn:
                self._enforcing = creds.any_exist(conn)
        return self._enforcing

    def _key(self, access_key: str) -> _Key | None:
        key = self._keys.get(access_key)
        if key is None:
            with self.engine.connect() as conn:
                found = creds.lookup(conn, self.box, access_key)
            if found is None:
                return None  # unknown keys are not cached: the cache must not grow on garbage
            if len(self._keys) >= MAX_CACHE:
                self._keys.clear()
            cred, secret = found
            key = _Key(cred, signer.keyed(secret), Principal("aksk", cred.access_key, cred.user_name,
                                                         frozenset(cred.projects)))
            self._keys[access_key] = key
        return key

    def _token(self, token: str) -> toks.Token | None:
        digest = toks.token_hash(token)
        if digest not in self._tokens:
            with self.engine.connect() as conn:
                found = toks.lookup(conn, token)
            if found is None:
                return None
            if len(self._tokens) >= MAX_CACHE:
                self._tokens.clear()
            self._tokens[digest] = found
        return self._tokens[digest]

    def projects_of(self, user_name: str) -> set[str]:
        if user_name not in self._user_projects:
            if len(self._user_projects) >= MAX_CACHE:
                self._user_projects.clear()
            with self.engine.connect() as conn:
                self._user_projects[user_name] = creds.user_projects(conn, user_name)
        return self._user_projects[user_name]

    # -- authentication --------------------------------------------------------------------------

    def authenticate(self, req: RequestView) -> tuple[Principal, Pending]:
        """The request's principal, or an AuthenticationFailed / ProjectForbidden / TokenProjectMismatch."""
        if req.headers.get("authorization"):
            return self._aksk(req)
        token = req.headers.get("x-auth-token")
        if token:
            return self._by_token(token, req.project), NOTHING_PENDING
        raise errors.AuthenticationFailed(IAM + "x-auth-token not found and no AK/SK Authorization header.")

    def _aksk(self, req: RequestView) -> tuple[Principal, Pending]:
        auth = signer.parse_authorization(req.headers["authorization"])
        if auth is None or "authorization" in req.multi:
            raise errors.AuthenticationFailed(
                IAM + "verify aksk signature fail, the Authorization header is not "
                "'SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...'.")
        key = self._key(auth.access_key)
        if key is None or not key.cred.active:
            why = "ak not exist" if key is None else "ak revoked"
            raise errors.AuthenticationFailed(IAM + f"Get secretKey failed,ak:{auth.access_key},err:{why}")
        cred = key.cred
        sent_date = req.headers.get("x-sdk-date", "")
        when = signer.parse_timestamp(sent_date)
        if when is None:
            raise errors.AuthenticationFailed(IAM + "verify aksk signature fail, X-Sdk-Date is missing or "
                                              "not in the form YYYYMMDDTHHMMSSZ.")
        skew = abs(time.time() - when)
        if skew > self.cfg.clock_skew_seconds:
            raise errors.AuthenticationFailed(
                IAM + f"verify aksk signature fail, X-Sdk-Date {sent_date} is {skew:.0f}s from the server time "
                f"(at most {self.cfg.clock_skew_seconds:.0f}s allowed).")
        headers = req.headers
        signed: dict[str, str] | None
        try:
            signed = {h: headers[h] for h in auth.signed_headers}
        except KeyError:
            signed = None
        if signed is None or (req.multi and not req.multi.isdisjoint(signed)):
            missing = [h for h in auth.signed_headers if h not in headers or h in req.multi]
            raise errors.AuthenticationFailed(
                IAM + f"verify aksk signature fail, signed headers missing or repeated: {', '.join(missing)}.")
        if len(signed) != len(auth.signed_headers):
            raise errors.AuthenticationFailed(IAM + "verify aksk signature fail, a header is listed twice in "
                                              "SignedHeaders.")
        signed.setdefault("x-sdk-date", sent_date)
        try:
            want = signer.expected_signature(key.mac, req.method, req.raw_path, req.query, signed,
                                             auth.signed_headers, req.body, signer.MAX_QUERY_FIELDS)
        except ValueError as exc:  # e.g. more query fields than MAX_QUERY_FIELDS
            raise errors.AuthenticationFailed(IAM + f"verify aksk signature fail, {exc}.") from exc
        if not hmac.compare_digest(want, auth.signature):
            raise errors.AuthenticationFailed(IAM + "verify aksk signature fail, the signature does not match.")
        header_project = req.headers.get("x-project-id")
        if req.project is not None and header_project is not None and header_project != req.project:
            raise errors.ProjectForbidden(f"X-Project-Id {header_project} does not match project {req.project} "
                                          "of the URL.")
        if req.project is not None and req.project not in cred.projects:
            raise errors.ProjectForbidden(f"Access key {cred.access_key} is not allowed in project {req.project}.")
        pending = NOTHING_PENDING
        if self.guards_replay(req.method, req.raw_path):
            if self.replay.seen(auth.signature):
                raise errors.AuthenticationFailed(
                    IAM + "verify aksk signature fail, this signature was already used (replayed request).")
            pending = Pending(auth.signature, when + self.cfg.clock_skew_seconds)
        return key.principal, pending

    def guards_replay(self, method: str, path: str) -> bool:
        """Whether a request's signature may be accepted only once: writes (requests that can change
        state) unless replay_protection is "off"; reads too when it is "strict"."""
        return self._replay_reads or (self._replay_writes and is_mutating(method, path))

    def _by_token(self, token: str, project: str | None) -> Principal:
        rec = self._token(token)
        if rec is None:
            raise errors.AuthenticationFailed(IAM + "decrypt token fail")
        if rec.revoked_at is not None:
            raise errors.AuthenticationFailed(IAM + "token revoked")
        now_ms = time.time() * 1000
        if rec.expires_at <= now_ms:
            expired = datetime.fromtimestamp(rec.expires_at / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            raise errors.AuthenticationFailed(IAM + f"token expires, expires_at: {expired}")
        if rec.project_id not in self.projects_of(rec.user_name):
            raise errors.AuthenticationFailed(IAM + "token revoked: its user holds no active access key for "
                                              f"project {rec.project_id}")
        if project is not None and project != rec.project_id:
            raise errors.TokenProjectMismatch(f"The token's project {rec.project_id} does not match project "
                                              f"{project} of the URL.")
        return Principal("token", rec.token_id, rec.user_name, frozenset({rec.project_id}))

    def admit(self, principal: Principal, pending: Pending) -> None:
        """Rate limiting (429), then remember the signature: a refused request may be retried as is."""
        wait = self.limiter.allow(principal.rate_key)
        if wait > 0:
            raise errors.TooManyRequests(f"Too many requests for {principal.principal_id}; retry in {wait:.2f}s.",
                                         retry_after=wait)
        if pending.signature:
            if self.replay.full():
                raise errors.TooManyRequests("The replay cache is full; retry shortly.", retry_after=1.0)
            self.replay.remember(pending.signature, pending.until)

    # -- passwords and tokens (POST /v3/auth/tokens, the CLI) -------------------------------------

    def password_locked(self, user_name: str) -> None:
        """Refuse a user whose consecutive wrong passwords reached the limit, until the lock ends."""
        count, until = self._password_failures.get(user_name[:USER_KEY_CHARS], (0, 0.0))
        if count >= self.cfg.password_lockout_failures and time.monotonic() < until:
            raise errors.AuthenticationFailed(IAM + "AK access failed to reach the limit,forbidden: too many "
                                              "wrong passwords; retry later.")

    def stored_password(self, user_name: str) -> str | None:
        with self.engine.connect() as conn:
            return creds.password_hash(conn, user_name)

    def password_result(self, user_name: str, ok: bool) -> None:
        """Count a wrong password (anyone may send any name: the table is keyed by at most
        USER_KEY_CHARS characters and holds at most MAX_CACHE names), or clear the count."""
        user_name = user_name[:USER_KEY_CHARS]
        if ok:
            self._password_failures.pop(user_name, None)
            return
        count, until = self._password_failures.get(user_name, (0, 0.0))
        now = time.monotonic()
        if now >= until:
            count = 0  # earlier failures have aged out
        if user_name not in self._password_failures and len(self._password_failures) >= MAX_CACHE:
            self._forget_failures(now)
        self._password_failures[user_name] = (count + 1, now + self.cfg.password_lockout_seconds)

    def _forget_failures(self, now: float) -> None:
        """Make room: forget the failures that have aged out, then the counts that lock nobody yet,
        and only then the oldest locks (a flood of names cannot grow the table)."""
        limit = self.cfg.password_lockout_failures
        kept = {u: v for u, v in self._password_failures.items() if v[1] > now}
        if len(kept) >= MAX_CACHE:
            kept = {u: v for u, v in kept.items() if v[0] >= limit}
        if len(kept) >= MAX_CACHE:
            kept = dict(list(kept.items())[len(kept) - MAX_CACHE + 1:])
        self._password_failures = kept

    def sign_in(self, access_key: str, secret_key: str, token: str, project: str) -> Principal:
        """The console's sign-in: an access key pair, or a token, for `project`. A wrong secret counts
        like a wrong password (locked after as many); AuthenticationFailed / ProjectForbidden /
        TokenProjectMismatch as for a request."""
        if token:
            return self._by_token(token, project)
        self.password_locked(access_key)
        key = self._key(access_key)
        ok = key is not None and key.cred.active and hmac.compare_digest(
            key.mac.copy().digest(), signer.keyed(secret_key).digest())
        self.password_result(access_key, ok)
        if not ok or key is None:
            raise errors.AuthenticationFailed(IAM + "The access key or secret key is wrong.")
        if project not in key.cred.projects:
            raise errors.ProjectForbidden(f"Access key {access_key} may not act in project {project}.")
        return key.principal

    def revoke_token(self, token: str) -> None:
        rec = self._token(token)
        if rec is not None:
            toks.revoke(self.engine, rec.token_id)
            self.invalidate()

    def issue_token(self, user_name: str, project_id: str, ttl: float, method: str,
                    issued_by: str) -> tuple[str, toks.Token]:
        with self.engine.begin() as conn:
            token, rec = toks.issue(conn, user_name, project_id, ttl, method, issued_by)
        return token, rec

    def record(self, rec: audit_log.AuditRecord) -> None:
        try:
            with self.engine.begin() as conn:
                audit_log.record(conn, rec)
        except Exception:  # the response has been sent: a lost audit row is logged loudly, never hidden
            log.exception("could not write the audit record %s", rec)
