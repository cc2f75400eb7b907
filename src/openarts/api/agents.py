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


async def cached_input(request: Request) -> Response:
    p = request.path_params
    path = _files(request).cached_input(p["job_id"], p["seq"], p["digest"], request.headers.get("authorization", ""))
    return FileResponse(path, media_type="application/octet-stream")


DRAIN_BYTES = 16 << 20  # what a refused upload may still send, read and dropped, so its refusal arrives


async def outputs(request: Request) -> Response:
    p = request.path_params
    try:
        await _files(request).receive_outputs(p["job_id"], p["seq"], p["task"],
                                              request.headers.get("authorization", ""), request.stream())
    except Exception:
        await _drain(request)  # refused before its body was read: the agent gets the answer, not a broken pipe
        raise
    return Response(status_code=204)


async def _drain(request: Request) -> None:
    read = 0
    try:
        async for chunk in request.stream():
            read += len(chunk)
            if read > DRAIN_BYTES:
                return
    except Exception:  # already read, or the client went away
        return


AGENT_ROUTES = [
    Route(PREFIX + "jobs/{job_id}/attempts/{seq}/{what}", packed, methods=["GET"]),
    Route(PREFIX + "jobs/{job_id}/attempts/{seq}/inputs/{digest}", cached_input, methods=["GET"]),
    Route(PREFIX + "jobs/{job_id}/attempts/{seq}/tasks/{task}/outputs", outputs, methods=["PUT"]),
]
