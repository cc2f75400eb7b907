"""The one table from domain errors to HTTP status + ModelArts error code, and the handlers that
turn any failure into the ModelArts error body. Never a traceback in a response."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from openarts.core import errors

# Most specific first: the first isinstance match wins.
TABLE: list[tuple[type[errors.OpenartsError], int, str]] = [
    (errors.UnsupportedMediaType, 415, "ModelArts.2787"),  # HTTP's status; the reference's InvalidJsonBody
    (errors.InvalidJsonBody, 400, "ModelArts.2787"),
    (errors.InvalidObsPath, 400, "ModelArts.2791"),
    (errors.FlavorNotFound, 400, "ModelArts.2781"),
    (errors.FlavorOutOfRange, 400, "ModelArts.2793"),
    (errors.EngineNotFound, 400, "ModelArts.2780"),
    (errors.UnsupportedFilter, 400, "ModelArts.2789"),
    (errors.UnsupportedSort, 400, "ModelArts.2790"),
    (errors.QueryParamsError, 400, "ModelArts.2764"),
    (errors.InputsOutputsError, 400, "ModelArts.2753"),
    (errors.AlgorithmNotFound, 400, "ModelArts.2755"),
    (errors.CodeDirError, 400, "ModelArts.2757"),
    (errors.BootFileError, 400, "ModelArts.2758"),
    (errors.CommandRequired, 400, "ModelArts.2806"),
    (errors.InvalidRequest, 400, "ModelArts.2788"),
    (errors.DuplicateJobName, 400, "ModelArts.2751"),
    (errors.JobNotFound, 400, "ModelArts.2775"),
    (errors.TaskNotFound, 400, "ModelArts.2775"),
    (errors.TrialNotFound, 400, "ModelArts.2775"),  # a thing of the job not found, as a task
    (errors.SearchAlgorithmNotFound, 400, "ModelArts.2755"),  # the reference's "algorithm not found."
    (errors.ExperimentNotFound, 400, "ModelArts.2775"),  # ModelArts documents no experiment codes: a job's
    (errors.DuplicateExperimentName, 400, "ModelArts.2751"),  # not-found and duplicate-name codes
    (errors.ExperimentInUse, 409, "ModelArts.0409"),  # no documented code: the status's, as 501 is 0501
    (errors.DuplicateAlgorithmName, 400, "ModelArts.2751"),  # no documented algorithm codes: as a job's name
    (errors.AlgorithmInUse, 409, "ModelArts.0409"),  # as ExperimentInUse
    (errors.NotAllowedToTerminate, 409, "ModelArts.2796"),
    (errors.JobStatusChanged, 409, "ModelArts.2878"),
    (errors.LogNotReady, 204, "ModelArts.2776"),  # the reference's status: no body can follow
    (errors.MetricsNotReady, 204, "ModelArts.2777"),
    (errors.NotImplementedOperation, 501, "ModelArts.0501"),
    (errors.NotSupportedHere, 501, "ModelArts.4204"),  # ModelArts' "the API is not subscribed": no service here
    (errors.AttemptFilesNotFound, 404, "ModelArts.2775"),
    (errors.PreparationError, 400, "ModelArts.2788"),
    (errors.AuthenticationFailed, 401, "APIGW.0301"),
    (errors.ProjectForbidden, 403, "ModelArts.0210"),
    (errors.TokenProjectMismatch, 404, "ModelArts.2786"),
    (errors.TooManyRequests, 429, "ModelArts.2799"),
    (errors.RequestTooLarge, 413, "APIGW.0201"),
    (errors.UriTooLong, 414, "APIGW.0201"),
    (errors.InvalidPath, 400, "ModelArts.0101"),
]


def error_body(code: str, message: str, request_id: str | None = None) -> bytes:
    body = {"error_code": code, "error_msg": message}
    if request_id is not None:  # the gateway's (APIGW) answers carry it in the body too
        body["request_id"] = request_id
    return orjson.dumps(body)


def error_response(status: int, code: str, message: str, request_id: str | None = None) -> Response:
    return Response(error_body(code, message, request_id), status_code=status, media_type="application/json")


def translate(exc: errors.OpenartsError) -> tuple[int, str]:
    for cls, status, code in TABLE:
        if isinstance(exc, cls):
            return status, code
    return 400, "ModelArts.0101"


async def domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.OpenartsError)
    status, code = translate(exc)
    if status == 204:  # ModelArts' "not ready" answers: HTTP allows no body with a 204
        return Response(status_code=204)
    return error_response(status, code, exc.message)


def allowed_methods(request: Request) -> str:
    """Every method a route serves at the request's path: a 405 must name them (RFC 9110, Allow)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    rid = str(request.scope.get("openarts.request_id", ""))
    if exc.status_code == 404:  # the gateway's answers (APIGW, as APIG documents them)
        return error_response(404, "APIGW.0101",
                              "The API does not exist or has not been published in the environment.", rid)
    if exc.status_code == 405:
        response = error_response(405, "APIGW.0101",
                                  "The API does not exist: the method is not allowed for this API.", rid)
        response.headers["Allow"] = allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        return response
    return error_response(exc.status_code, f"ModelArts.{exc.status_code:04d}", str(exc.detail))
