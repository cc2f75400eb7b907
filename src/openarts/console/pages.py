"""The web console: pages the server renders itself, at /console (docs/CONSOLE.md).

Server-rendered HTML (Jinja2, autoescaped) over the very services the API uses, so a page shows what
GET shows; htmx 2 and uPlot are vendored under static/vendor (no CDN, nothing fetched at run time).
The pages live under /console/{project_id}/..., so the API's authentication middleware authorizes
them as it authorizes /v2/{project_id}/... (api/auth.py): a project shows only its own jobs.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from openarts.console.fragments import job_fragment, jobs_of, observe_of, search_of
from openarts.console.logs import LOG_ROUTES, log_view
from openarts.console.timeline import job_timeline
from openarts.console.usage import USAGE_ROUTES, usage_columns
from openarts.core import errors
from openarts.core.inputs import MAX_SEARCH_OFFSET
from openarts.core.phases import TERMINAL, Phase
from openarts.core.roles import role_of
from openarts.core.search import SEARCH_KIND
from openarts.security.credentials import PROJECT_RE
from openarts.security.guard import Guard

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")  # autoescaped: every value a user gave is text
PAGE_SIZE = 20
SORTS = {"create_time": "Created", "update_time": "Updated", "name": "Name", "phase": "Phase"}
PHASES = [p.value for p in Phase]
DEFAULT_PROJECT = "default"


def ms_time(ms: int) -> str:
    """An epoch-milliseconds time as UTC text ("" for none)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else ""


def ms_duration(ms: int) -> str:
    seconds = int(ms) // 1000
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


TEMPLATES.env.filters.update(ms_time=ms_time, ms_duration=ms_duration, role_of=role_of)


SESSION_COOKIE = "openarts_session"  # api/auth.py reads it back as the request's X-Auth-Token
PROJECT_COOKIE = "openarts_project"  # the project last opened
TEMPLATES.env.globals["SESSION_COOKIE"] = SESSION_COOKIE
SESSION_SECONDS = 8 * 3600


def _guard(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


async def sign_in_form(request: Request) -> Response:
    return TEMPLATES.TemplateResponse(request, "signin.html", {
        "project": request.query_params.get("project", ""), "next": _next(request.query_params.get("next", "")),
        "error": "", "open": not _guard(request).enforcing()})


def _next(path: str) -> str:
    """Where to go after signing in: a console page of this server, nothing else (no open redirect)."""
    return path if path.startswith("/console/") and "//" not in path and "\\" not in path else ""


async def sign_in(request: Request) -> Response:
    """An access key pair, or a token, for a project: the session is a token kept in an HttpOnly,
    SameSite=Strict cookie (one issued here for a key pair, for SESSION_SECONDS)."""
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    project, token = form.get("project", "").strip(), form.get("token", "").strip()
    access_key, secret_key = form.get("access_key", "").strip(), form.get("secret_key", "")
    guard = _guard(request)
    after = _next(form.get("next", ""))
    context = {"project": project, "next": after, "open": not guard.enforcing()}
    try:
        if not project:
            raise errors.InvalidRequest("Name the project to open.")
        if not token and not (access_key and secret_key):
            raise errors.InvalidRequest("Give an access key and its secret key, or a token.")
        principal = guard.sign_in(access_key, secret_key, token, project)
    except errors.OpenartsError as exc:
        return TEMPLATES.TemplateResponse(request, "signin.html", {**context, "error": exc.message}, status_code=401)
    request.scope["openarts.principal"] = principal  # the audit row names who signed in
    if not token:
        token, _ = guard.issue_token(principal.user_name, project, SESSION_SECONDS, "console", principal.principal_id)
    response = RedirectResponse(after or f"/console/{project}/jobs", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        path="/console", secure=request.url.scheme == "https")
    return response


async def sign_out(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        _guard(request).revoke_token(token)
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


SECTIONS = ("jobs", "queue", "jobs/new")  # a project's pages the switcher can open


async def home(request: Request) -> Response:
    """The project switcher (`?project=ID&section=queue`), else the project last opened: to its page. An id
    that is no project id (credentials' PROJECT_RE) opens the last project instead."""
    asked = request.query_params.get("project", "").strip()
    project = asked if PROJECT_RE.fullmatch(asked) else request.cookies.get(PROJECT_COOKIE, "")
    project = project if PROJECT_RE.fullmatch(project) else DEFAULT_PROJECT
    section = request.query_params.get("section", "jobs")
    return RedirectResponse(f"/console/{project}/{section if section in SECTIONS else 'jobs'}", status_code=303)


def _query(params: dict[str, Any], **changes: Any) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "", [])}
    return "?" + urlencode(merged, doseq=True)


async def jobs_page(request: Request) -> Response:
    """The project's jobs: phase filters (with counts), a name search, sorting and pages."""
    project = request.path_params["project_id"]
    response = TEMPLATES.TemplateResponse(request, "jobs.html", list_context(request, project))
    response.set_cookie(PROJECT_COOKIE, project, httponly=True, samesite="strict", path="/console")
    return response


def list_context(request: Request, project: str) -> dict[str, Any]:
    """The job list's page of jobs and phase counts for the request's filters, sort and page (the page
    and its live rows, console/joblist.py)."""
    q = request.query_params
    phases = [p for p in q.getlist("phase") if p in PHASES]
    name = q.get("name", "")[:64]
    sort = q.get("sort", "create_time") if q.get("sort") in SORTS else "create_time"
    order = "asc" if q.get("order") == "asc" else "desc"
    page = int(q["page"]) if q.get("page", "").isdigit() and int(q["page"]) > 0 else 1
    page = min(page, MAX_SEARCH_OFFSET // PAGE_SIZE + 1)  # a page past the search's reach is its last one
    filters: list[dict[str, Any]] = []
    if phases:
        filters.append({"key": "phase", "operator": "in", "value": phases})
    if name:
        filters.append({"key": "name", "operator": "like", "value": [name]})
    found = jobs_of(request).search(project, {"offset": (page - 1) * PAGE_SIZE, "limit": PAGE_SIZE, "sort_by": sort,
                                            "order": order, "filters": filters})
    params = {"phase": phases, "name": name, "sort": sort, "order": order}
    pages = max(1, -(-int(found["total"]) // PAGE_SIZE))
    return {
        "project": project, "jobs": found["items"], "total": found["total"],
        "counts": jobs_of(request).phase_counts(project),
        "phases": PHASES, "chosen": set(phases), "name": name, "sort": sort, "order": order, "sorts": SORTS,
        "page": page, "pages": pages, "params": params, "query": _query}


async def job_page(request: Request) -> Response:
    """One job: its essentials, attempts, tasks and latest events."""
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    try:
        doc = jobs_of(request).get(project, job_id)
    except errors.JobNotFound:
        return TEMPLATES.TemplateResponse(request, "missing.html", {"project": project, "job_id": job_id},
                                          status_code=404)
    events = observe_of(request).events(project, job_id, {"limit": "100", "order": "desc"})["events"]
    if doc["kind"] == SEARCH_KIND:  # a search runs no task of its own: its trials, each a job with its own page
        trials = search_of(request).trials(project, job_id, "1000", "0")["items"]
        return TEMPLATES.TemplateResponse(request, "job.html", {
            "project": project, "job": doc, "events": events, "final": _final(doc), "trials": trials,
            "timeline": job_timeline(doc, observe_of(request).stages(project, job_id), int(time.time() * 1000)),
            "node_counts": json.dumps(_node_counts(doc))})
    return TEMPLATES.TemplateResponse(request, "job.html", {
        "project": project, "job": doc, "events": events, "final": _final(doc),
        "logs": await log_view(request, doc),  # console/logs.py: a task's attempt, followed or searched
        "timeline": job_timeline(doc, observe_of(request).stages(project, job_id), int(time.time() * 1000)),
        "node_counts": json.dumps(_node_counts(doc)), "usage": json.dumps(usage_columns(request, doc))})


def _node_counts(doc: dict[str, Any]) -> list[list[float]]:
    """node_count_metrics as uPlot's columns: [times in seconds], [counts] (a step to now while it runs)."""
    points = [(t / 1000, c) for t, c in doc["status"]["node_count_metrics"]]
    if points and not _final(doc):
        points.append((time.time(), points[-1][1]))
    return [[p[0] for p in points], [p[1] for p in points]]


def _final(doc: dict[str, Any]) -> bool:
    return Phase(doc["status"]["phase"]) in TERMINAL


def _live(request: Request, project: str, doc: dict[str, Any]) -> Response:
    return TEMPLATES.TemplateResponse(request, "_live.html", {"project": project, "job": doc, "final": _final(doc)})


@job_fragment  # a job that is gone: a message in the fragment's place (404), which stops the polling
async def live(request: Request) -> Response:
    """The parts of a job's page that change while it runs (phase, tasks), polled every 2 s until it ends."""
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    return _live(request, project, jobs_of(request).get(project, job_id))


@job_fragment
async def terminate(request: Request) -> Response:
    """Terminate from the page (htmx, after a confirmation). Only htmx's requests are taken: their
    HX-Request header makes another site's form unable to post here (a cross-origin request with a
    custom header needs a CORS preflight, which this server never grants)."""
    if request.headers.get("hx-request") != "true":
        return Response("Terminate from the console's page.", status_code=403)
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    return _live(request, project, jobs_of(request).terminate(project, job_id, {"action_type": "terminate"}))


CONSOLE_ROUTES = [
    Route("/console", home, methods=["GET"]),
    Route("/console/signin", sign_in_form, methods=["GET"]),
    Route("/console/signin", sign_in, methods=["POST"]),
    Route("/console/signout", sign_out, methods=["POST"]),
    Mount("/console/static", app=StaticFiles(directory=HERE / "static"), name="console-static"),
    Route("/console/{project_id}/jobs", jobs_page, methods=["GET"]),
    Route("/console/{project_id}/jobs/{job_id}", job_page, methods=["GET"]),
    Route("/console/{project_id}/jobs/{job_id}/live", live, methods=["GET"]),
    *LOG_ROUTES,  # /log, /log/follow (console/logs.py)
    *USAGE_ROUTES,  # /usage (console/usage.py)
    Route("/console/{project_id}/jobs/{job_id}/terminate", terminate, methods=["POST"]),
]
