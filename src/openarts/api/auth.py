"""The security boundary: an ASGI middleware in front of every route.

For each HTTP request it enforces the URI and body size limits, refuses path segments that could
walk out of a directory, authenticates (AK/SK signature or X-Auth-Token) when the data directory
holds credentials, rate-limits per credential, puts the user name where the routes read it
(`scope["openarts.user"]`), and writes an audit row for every mutating request, refused ones too.
`/health` is always open, `/metrics` with `[server] metrics_public`; the agents' routes
(`/internal/agents/`, api/agents.py) check their attempt's token themselves and stream their bodies, and
a log link (`.../logs/download`) its own signature.
Refusals are ModelArts/APIGW error bodies from the one table in api/errors.py.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openarts.api import errors as api_errors
from openarts.console.pages import SESSION_COOKIE  # the console's sign-in: a token
from openarts.core import errors
from openarts.security.audit import AuditRecord
from openarts.security.guard import ANONYMOUS, NOTHING_PENDING, Guard, Principal, RequestView, is_mutating

log = logging.getLogger("openarts.security")

MAX_URI = 16 * 1024
MAX_BODY = 12 * 1024 * 1024  # APIG's limit (413 APIGW.0201); the routes refuse smaller ones (400 ModelArts.2787)
OPEN_PATHS = frozenset({"/health"})
AGENTS = "/internal/agents/"  # nodes' agents: authenticated by their attempt's token (api/agents.py)
SIGNED_LOGS = "/logs/download"  # a log link's own signature authenticates it (security/log_links.py)
IAM_TOKENS = "/v3/auth/tokens"
CONSOLE = "/console/"
CONSOLE_OPEN = ("/console/signin", "/console/signout", "/console/static/")  # no principal needed
CAPTURE_BYTES = 64 * 1024  # of a mutating request's response, to audit its error code or new job id


class ClientGone(Exception):
    """The client disconnected while its body was being read."""


def _project(path: str) -> str | None:
    """The project a path acts on: /v2/{project_id}/..., and the console's /console/{project_id}/..."""
    parts = path.split("/", 3)
    return parts[2] if len(parts) >= 3 and parts[1] in ("v2", "console") and parts[2] else None


def _console(path: str) -> bool:
    return path == CONSOLE.rstrip("/") or path.startswith(CONSOLE)


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


async def _to_sign_in(scope: Scope, send: Send) -> None:
    """A console page to the sign-in form (303); a fragment or a chart's data (htmx's requests, fetch's
    JSON) a 401 whose HX-Redirect sends the whole page there, so that no poll swaps the form into a page."""
    headers = dict(scope.get("headers") or [])
    fragment = headers.get(b"hx-request") == b"true" or b"application/json" in headers.get(b"accept", b"")
    page = headers.get(b"hx-current-url", b"").decode("latin-1").split("://", 1)[-1].partition("/")[2]
    back = "/" + page if fragment and page else scope["path"]
    target = "/console/signin" + ("?" + urlencode({"next": back}) if back.startswith(CONSOLE) else "")
    status = 401 if fragment else 303
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"location" if status == 303 else b"hx-redirect", target.encode()),
                            (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def check_path(path: str, raw_path: bytes) -> None:
    """No '.' or '..' segment and no encoded '/': a path parameter is one segment naming a database row,
    never a file path. (Other odd ids - NUL, backslash - are simply unknown ids to the services.)"""
    if b"%2f" in raw_path.lower():
        raise errors.InvalidPath("Invalid path: an encoded '/' is not allowed in a path parameter.")
    if any(seg in (".", "..") for seg in path.split("/")):
        raise errors.InvalidPath("Invalid path: '.' and '..' are not allowed as path parameters.")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError as exc:
                raise errors.InvalidRequest("Invalid Content-Length header.") from exc
            if declared > limit:
                raise errors.RequestTooLarge(f"Request entity too large: the body limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.RequestTooLarge(f"Request entity too large: the body limit is {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(scope: Scope) -> tuple[dict[str, str], frozenset[str]]:
    out: dict[str, str] = {}
    multi: set[str] = set()
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        try:
            value = raw_value.decode("utf-8")  # the SDK sends header values as UTF-8 bytes
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        if name in out:
            multi.add(name)
        out[name] = value
    return out, frozenset(multi)


def _target(path: str, request_body: bytes, response_body: bytes) -> str:
    """The job id(s) a mutating request acted on, for the audit log."""
    parts = path.split("/")
    if len(parts) >= 5 and parts[3] == "training-jobs" and parts[4] != "batch-delete":
        return parts[4]
    doc: Any = None
    source = response_body if path.endswith("/training-jobs") else request_body
    try:
        doc = orjson.loads(source) if source else None
    except orjson.JSONDecodeError:
        return ""
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        return str(doc["metadata"].get("id", ""))[:64]
    if isinstance(doc, dict) and isinstance(doc.get("jobs"), list):
        ids = [str(j["metadata"].get("id", "")) for j in doc["jobs"][:50]
               if isinstance(j, dict) and isinstance(j.get("metadata"), dict)]
        return ",".join(ids)[:2000]
    return ""


class AuthMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard, max_body: int, open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.guard = guard
        self.max_body = max_body
        self.open_paths = OPEN_PATHS | open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or scope["path"].startswith(AGENTS) or (
                scope["path"].endswith(SIGNED_LOGS) and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        mutating = is_mutating(method, path)
        principal, pending = ANONYMOUS, NOTHING_PENDING
        claimed = ""
        body = b""
        try:
            raw_path: bytes = scope.get("raw_path") or path.encode()
            query: bytes = scope.get("query_string", b"")
            if len(raw_path) + len(query) > MAX_URI:
                raise errors.UriTooLong(f"Request URI too large: at most {MAX_URI} bytes.")
            body = await read_body(scope, receive, self.max_body)
            headers, multi = _headers(scope)
            if _console(path) and "authorization" not in headers and "x-auth-token" not in headers:
                session = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
                if session:  # a signed-in browser: its session is a token (SameSite=Strict: never cross-site)
                    headers["x-auth-token"] = session
            claimed = headers.get("authorization", "")[:120] or ("token" if "x-auth-token" in headers else "")
            enforcing = self.guard.enforcing()
            anonymous_ok = not enforcing or (path == IAM_TOKENS and not claimed) or path.startswith(CONSOLE_OPEN)
            if not anonymous_ok:
                view = RequestView(method, raw_path.decode("latin-1").split("?", 1)[0], query.decode("latin-1"),
                                   headers, body, _project(path), multi)
                principal, pending = self.guard.authenticate(view)
            check_path(path, raw_path)
            if principal is not ANONYMOUS:
                self.guard.admit(principal, pending)
        except ClientGone:
            return
        except errors.OpenartsError as exc:
            if _console(path) and method == "GET" and isinstance(exc, (
                    errors.AuthenticationFailed, errors.TokenProjectMismatch, errors.ProjectForbidden)):
                await _to_sign_in(scope, send)  # a page: to the sign-in form, not a JSON refusal
                return
            status = await self._refuse(scope, send, exc)
            if mutating:
                self._audit(scope, principal, claimed, status, api_errors.translate(exc)[1], body, b"")
            return
        if principal is not ANONYMOUS:
            scope["openarts.user"] = principal.user_name
        scope["openarts.principal"] = principal
        await self._forward(scope, body, receive, send, principal, mutating)

    async def _forward(self, scope: Scope, body: bytes, receive: Receive, send: Send, principal: Principal,
                       mutating: bool) -> None:
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if not mutating:
            await self.app(scope, replay, send)
            return
        status = 500
        captured = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and len(captured) < CAPTURE_BYTES:
                captured.extend(message.get("body", b"")[:CAPTURE_BYTES - len(captured)])
            await send(message)

        try:
            await self.app(scope, replay, capture)
        finally:
            code = ""
            if status >= 400:
                try:
                    doc = orjson.loads(bytes(captured)) if captured else None
                    code = str(doc.get("error_code", "")) if isinstance(doc, dict) else ""
                except orjson.JSONDecodeError:
                    code = ""
            who = scope.get("openarts.principal", principal)  # a route may name who it authenticated
            self._audit(scope, who, "", status, code, body, bytes(captured) if status < 400 else b"")

    async def _refuse(self, scope: Scope, send: Send, exc: errors.OpenartsError) -> int:
        status, code = api_errors.translate(exc)
        rid = str(scope.get("openarts.request_id", ""))
        payload = orjson.dumps({"error_code": code, "error_msg": exc.message, "request_id": rid})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if isinstance(exc, errors.TooManyRequests):
            headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
        if status in (413, 414):
            headers.append((b"connection", b"close"))
        if status >= 401 and status != 413:
            log.info("refused %s %s: %s %s", scope["method"], scope["path"], code, exc.message)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return status

    def _audit(self, scope: Scope, principal: Principal, claimed: str, status: int, code: str,
               request_body: bytes, response_body: bytes) -> None:
        client = scope.get("client")
        who = principal.principal_id
        kind = principal.kind
        if principal is ANONYMOUS and claimed and status in (401, 403, 404, 429):
            kind = "failed"
            who = claimed.split("Access=", 1)[-1].split(",", 1)[0][:64] if "Access=" in claimed else claimed[:64]
        path: str = scope["path"]
        self.guard.record(AuditRecord(
            at=int(time.time() * 1000), request_id=str(scope.get("openarts.request_id", "")),
            remote=f"{client[0]}:{client[1]}" if client else "", principal=who, auth=kind,
            user_name=principal.user_name, project_id=_project(path) or "", method=scope["method"],
            path=path[:1024], target=_target(path, request_body, response_body), status=status, error_code=code))
