"""A job's CPU and memory charts (docs/CONSOLE.md): per task, the per-minute averages that the metrics
sampler keeps (supervisor/metrics.py; the `metrics` table, what GET .../tasks/{task}/metrics serves),
as uPlot's columns. They stay after the job ended and go with it when it is deleted.

cpuUsage is the percentage of the flavor's cores the task's processes used, memUsage the percentage
of its memory they held; a minute without a sample is a gap. The page draws the first MAX_TASKS
tasks, one line each, and asks for them again while the job runs.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openarts.console.fragments import is_final, job_fragment, jobs_of, observe_of
from openarts.core import errors
from openarts.core.search import SEARCH_KIND

MAX_TASKS = 16  # tasks charted
REFRESH_SECONDS = 20  # the page asks again while the job runs (the values are per minute)


def usage_columns(request: Request, doc: dict[str, Any]) -> dict[str, Any]:
    """{"tasks": [names], "cpu": [[times, s], [task 0's %], ...], "mem": [...], "final": bool}: a point a
    minute from the job's first start (null where the minute has no sample)."""
    project, job_id = request.path_params["project_id"], doc["metadata"]["id"]
    status = doc["status"]
    tasks = list(status["tasks"])[:MAX_TASKS] if doc["kind"] != SEARCH_KIND else []  # a search's: its trials
    series: dict[str, list[list[float | None]]] = {"cpuUsage": [], "memUsage": []}
    observe = observe_of(request)
    for task in tasks if status["start_time"] else []:
        try:
            metrics = {m["metric"]: m["value"] for m in observe.metrics(project, job_id, task)["metrics"]}
        except errors.MetricsNotReady:
            break
        for name, values in series.items():
            values.append([None if v < 0 else v for v in metrics.get(name, [])])
    points = max((len(v) for values in series.values() for v in values), default=0)
    first = status["start_time"] // 60000
    times: list[float | None] = [float((first + i) * 60) for i in range(points)]
    charted = len(series["cpuUsage"])
    return {"tasks": tasks[:charted], "final": is_final(doc),
            "cpu": [times, *(_padded(v, points) for v in series["cpuUsage"])],
            "mem": [times, *(_padded(v, points) for v in series["memUsage"])]}


def _padded(values: list[float | None], points: int) -> list[float | None]:
    return values + [None] * (points - len(values))


@job_fragment
async def usage(request: Request) -> Response:
    """The CPU and memory columns of a job's tasks, as JSON (the page's charts ask for them while it runs)."""
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    return JSONResponse(usage_columns(request, jobs_of(request).get(project, job_id)))


USAGE_ROUTES = [
    Route("/console/{project_id}/jobs/{job_id}/usage", usage, methods=["GET"]),
]
