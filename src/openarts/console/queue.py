"""The console's queue page (docs/CONSOLE.md): the flavors of the catalog and how many workers of each fit
now, the nodes with their capacity and what is free of it, the project's waiting jobs in the scheduler's
order with why each waits, and the project's quotas. All of it read from the server's own catalog and
store (service/queue.py), refreshed every 5 s while the page is open.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openarts.console.actions import remember
from openarts.console.pages import TEMPLATES
from openarts.service.catalog import CatalogService
from openarts.service.jobs import JobService
from openarts.service.queue import NodeUse, queue_view

QUOTA_NAMES = {"running_jobs": "Running jobs", "cpu_cores": "CPU cores", "gpus": "GPUs"}


def _flavors(catalog: CatalogService, nodes: list[NodeUse]) -> list[dict[str, Any]]:
    """The API's flavor list (GET /training-job-flavors), each with how many workers of it fit now."""
    out = []
    for item in catalog.flavors(None)["flavors"]:
        flavor = catalog.catalog.flavors[item["flavor_id"]]
        now = sum(n.fits(flavor) for n in nodes if n.pool == item["pool_id"])
        out.append({**item, "flavor": flavor, "fit_now": now})
    return out


async def queue_page(request: Request) -> Response:
    """The project's queue page (polled by itself every 5 s: its #queue section)."""
    project = request.path_params["project_id"]
    jobs: JobService = request.app.state.jobs
    catalog: CatalogService = request.app.state.catalog
    view = queue_view(jobs.db, jobs.catalog, project)
    quotas = jobs.quotas(project)["quotas"]
    response = TEMPLATES.TemplateResponse(request, "queue.html", {
        "project": project, "view": view, "flavors": _flavors(catalog, view.nodes), "quotas": quotas,
        "quota_names": QUOTA_NAMES, "limited": any(item["quota"] >= 0 for item in quotas)})
    return remember(response, project)


QUEUE_ROUTES = [Route("/console/{project_id}/queue", queue_page, methods=["GET"])]
