"""The routes a node's agent uses (executors/bundles.py): outside the ModelArts API, not in
/openapi.json, authenticated by the attempt's token instead of AK/SK (api/auth.py lets them through
unread, so that bodies stream)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from openarts.service.attempt_files import AttemptFiles

PREFIX = "/internal/agents/"


def _files(request: Request) -> AttemptFiles:
    files: AttemptFiles = request.app.state.attempt_files
    return files


async def packed(request: Request) -> Response:
    p = request.path_params
    path = _files(request).packed(p["job_id"], p["seq"], p["what"], request.headers.get("authorization", ""))
    return FileResponse(path, media_type="application/x-tar")


async def outputs(request: Request) -> Response:
    p = request.path_params
    await _files(request).receive_outputs(p["job_id"], p["seq"], p["task"],
                                          request.headers.get("authorization", ""), request.stream())
    return Response(status_code=204)


AGENT_ROUTES = [
    Route(PREFIX + "jobs/{job_id}/attempts/{seq}/{what}", packed, methods=["GET"]),
    Route(PREFIX + "jobs/{job_id}/attempts/{seq}/tasks/{task}/outputs", outputs, methods=["PUT"]),
]
