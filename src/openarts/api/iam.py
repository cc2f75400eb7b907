"""The slice of the IAM v3 API that clients need to get a token for openarts:

- `POST /v3/auth/tokens` - a token for one project, either for the AK/SK that signed the request
  (identity method `hw_ak_sk`, or any method when the request is signed), or for a user name and
  password (`password`). Answers 201 with the token in `X-Subject-Token` and the Keystone-style body.
- `GET /v3/projects` - the projects the caller may act in (the SDK asks for it with `with_region`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openarts.api.routes import body_json, ok
from openarts.core import errors
from openarts.security import credentials as creds
from openarts.security.config import SecurityConfig
from openarts.security.guard import ANONYMOUS, IAM, Guard, Principal

DOMAIN = {"id": "openarts", "name": "openarts"}


def _guard(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.InvalidRequest(f"Invalid parameter {path}: must be an object.")
    return value


async def _password_user(guard: Guard, identity: dict[str, Any]) -> str:
    user = _dict(_dict(identity.get("password"), "auth.identity.password").get("user"),
                 "auth.identity.password.user")
    name, password = user.get("name"), user.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or len(password) > 1024:
        raise errors.InvalidRequest("Invalid parameter auth.identity.password.user: name and password are required.")
    guard.password_locked(name)
    stored = guard.stored_password(name)
    if stored is None:
        await asyncio.to_thread(creds.hash_password, password)  # the same time as a wrong password
        ok_ = False
    else:
        ok_ = await asyncio.to_thread(creds.password_matches, stored, password)
    guard.password_result(name, ok_)
    if not ok_:
        raise errors.AuthenticationFailed(IAM + "The username or password is wrong.")
    return name


async def create_token(request: Request) -> Response:
    guard = _guard(request)
    principal: Principal = request.scope.get("openarts.principal", ANONYMOUS)
    body = _dict(await body_json(request), "body")
    auth = _dict(body.get("auth"), "auth")
    identity = _dict(auth.get("identity"), "auth.identity")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise errors.InvalidRequest("Invalid parameter auth.identity.methods: an array of strings is required.")
    if principal.kind == "aksk":
        user, method, issued_by, allowed = principal.user_name, "hw_ak_sk", principal.principal_id, principal.projects
    elif principal.kind == "none" and "password" in methods:
        user = await _password_user(guard, identity)
        method, issued_by, allowed = "password", user, frozenset(guard.projects_of(user))
    else:
        raise errors.AuthenticationFailed(IAM + "sign this request with AK/SK, or use the password method.")
    project = _dict(_dict(auth.get("scope"), "auth.scope").get("project"), "auth.scope.project")
    project_id = project.get("id") or project.get("name")
    if not isinstance(project_id, str) or not project_id:
        raise errors.InvalidRequest("Invalid parameter auth.scope.project: an id (or name) is required.")
    if project_id not in allowed:
        raise errors.ProjectForbidden(f"User {user} may not act in project {project_id}.")
    cfg: SecurityConfig = guard.cfg
    token, rec = guard.issue_token(user, project_id, cfg.token_ttl_seconds, method, issued_by)
    request.scope["openarts.principal"] = Principal(method, rec.token_id, user, frozenset({project_id}))
    doc = {"token": {
        "methods": [method], "expires_at": _iso(rec.expires_at), "issued_at": _iso(rec.created_at),
        "user": {"id": user, "name": user, "domain": DOMAIN},
        "project": {"id": project_id, "name": project_id, "domain": DOMAIN},
        "roles": [{"id": "0", "name": "te_admin"}], "catalog": [],
    }}
    return Response(orjson.dumps(doc), status_code=201, media_type="application/json",
                    headers={"X-Subject-Token": token})


async def list_projects(request: Request) -> Response:
    principal: Principal = request.scope.get("openarts.principal", ANONYMOUS)
    if principal.kind == "none":
        raise errors.AuthenticationFailed(IAM + "x-auth-token not found and no AK/SK Authorization header.")
    name = request.query_params.get("name")
    projects = [{"id": p, "name": name or p, "domain_id": DOMAIN["id"], "enabled": True, "is_domain": False}
                for p in sorted(principal.projects)]
    return ok({"projects": projects, "links": {"self": str(request.url)}})


IAM_ROUTES = [
    Route("/v3/auth/tokens", create_token, methods=["POST"]),
    Route("/v3/projects", list_projects, methods=["GET"]),
]
