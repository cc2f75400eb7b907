"""The one table from domain errors to HTTP status + ModelArts error code, and the handlers that
turn any failure into the ModelArts error body. Never a traceback in a response."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from openarts.core import errors

# Most specific first: the first isinstance match wins.
TABLE: list[tuple[type[errors.OpenartsError], int, str]] = [
    (errors.InvalidJsonBody, 400, "ModelArts.2787"),
    (errors.InvalidObsPath, 400, "ModelArts.2791"),
    (errors.FlavorNotFound, 400, "ModelArts.2781"),
    (errors.FlavorOutOfRange, 400, "ModelArts.2793"),
    (errors.EngineNotFound, 400, "ModelArts.2780"),
    (errors.UnsupportedFilter, 400, "ModelArts.2789"),
    (errors.UnsupportedSort, 400, "ModelArts.2790"),
    (errors.QueryParamsError, 400, "ModelArts.2764"),
    (errors.InvalidRequest, 400, "ModelArts.2788"),
    (errors.DuplicateJobName, 400, "ModelArts.2751"),
    (errors.JobNotFound, 400, "ModelArts.2775"),
    (errors.TaskNotFound, 400, "ModelArts.2775"),
    (errors.NotAllowedToTerminate, 409, "ModelArts.2796"),
    (errors.JobStatusChanged, 409, "ModelArts.2878"),
    (errors.LogNotReady, 400, "ModelArts.2776"),
    (errors.PreparationError, 400, "ModelArts.2788"),
    (errors.AuthenticationFailed, 401, "APIG.0301"),
    (errors.ProjectForbidden, 403, "ModelArts.0210"),
    (errors.TokenProjectMismatch, 404, "ModelArts.2786"),
    (errors.TooManyRequests, 429, "ModelArts.2799"),
    (errors.RequestTooLarge, 413, "APIG.0201"),
    (errors.UriTooLong, 414, "APIG.0201"),
    (errors.InvalidPath, 400, "ModelArts.0101"),
]


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error_code": code, "error_msg": message})


def error_response(status: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status_code=status, media_type="application/json")


def translate(exc: errors.OpenartsError) -> tuple[int, str]:
    for cls, status, code in TABLE:
        if isinstance(exc, cls):
            return status, code
    return 400, "ModelArts.0101"


async def domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.OpenartsError)
    status, code = translate(exc)
    return error_response(status, code, exc.message)


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, "APIG.0101", "The API does not exist or has not been published.")
    if exc.status_code == 405:
        return error_response(405, "APIG.0102", "The method is not allowed for this API.")
    return error_response(exc.status_code, f"ModelArts.{exc.status_code:04d}", str(exc.detail))
