"""What the job page's fragment routes share (console/logs.py, console/usage.py, and pages.py's polls):
the services, the fragments' templates, and the answer for a job that is gone.

A fragment of a job that does not exist (deleted while its page was open, or another project's) is a
small HTML message with status 404, which jobview.js (the job page's script) lets htmx swap in: it takes
the polling element's place, so the polling stops.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from openarts.core import errors
from openarts.core.phases import TERMINAL, Phase
from openarts.service.jobs import JobService
from openarts.service.observe import ObserveService
from openarts.service.search import SearchService

# the fragments' own environment over the same templates (autoescaped); pages.py's renders the pages,
# which include some of these fragments: they use only Jinja's built-in filters
FRAGMENTS = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
MISSING = "X-Openarts-Missing"  # marks the 404 answer jobview.js lets htmx swap in

Handler = Callable[[Request], Awaitable[Response]]


def jobs_of(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def observe_of(request: Request) -> ObserveService:
    service: ObserveService = request.app.state.observe
    return service


def search_of(request: Request) -> SearchService:
    service: SearchService = request.app.state.search
    return service


def is_final(doc: dict[str, Any]) -> bool:
    return Phase(doc["status"]["phase"]) in TERMINAL


def missing(request: Request) -> Response:
    """The job of this fragment does not exist (any more): a message in its place, 404."""
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    return FRAGMENTS.TemplateResponse(request, "_missing.html", {"project": project, "job_id": job_id},
                                      status_code=404, headers={MISSING: "1"})


def job_fragment(handler: Handler) -> Handler:
    """A fragment route of one job: a job that does not exist is `missing()`, not the API's JSON error."""

    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except errors.JobNotFound:
            return missing(request)

    return route
