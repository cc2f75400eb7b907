"""The job list's live rows (docs/CONSOLE.md): the page polls them every 3 s with its own filters, sort
and page, so phases change while it is open; the phase counts and the total come out of band (htmx),
leaving the filter form alone."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openarts.console.pages import TEMPLATES, list_context


async def job_rows(request: Request) -> Response:
    """The rows of the list's page for the same query, with the counts and total out of band."""
    project = request.path_params["project_id"]
    return TEMPLATES.TemplateResponse(request, "_rows_live.html", list_context(request, project))


JOBLIST_ROUTES = [Route("/console/{project_id}/jobs/rows", job_rows, methods=["GET"])]  # before /jobs/{job_id}
