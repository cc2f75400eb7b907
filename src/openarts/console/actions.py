"""The console's actions on jobs: submit a job from a page, delete one (docs/CONSOLE.md).

Both go through the very services the API's routes call (POST and DELETE /v2/{project_id}/training-jobs),
so a body the API refuses is refused here with the same ModelArts error code and message. Like Terminate,
both take only htmx's requests (their HX-Request header): another site cannot make a browser post them,
since a cross-origin request with a custom header needs a CORS preflight this server never grants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openarts.console.fragments import jobs_of
from openarts.console.pages import PROJECT_COOKIE, TEMPLATES
from openarts.core import errors
from openarts.core.inputs import MAX_BODY, parse_json_body
from openarts.core.resources import Catalog

Translate = Callable[[errors.OpenartsError], tuple[int, str]]


def modelarts_error(request: Request, exc: errors.OpenartsError) -> tuple[int, str]:
    """The HTTP status and ModelArts error code the API answers `exc` with: its one table (api/errors.py),
    handed to the app's state by api/app.py (the console may not import the API)."""
    translate: Translate | None = getattr(request.app.state, "translate_error", None)
    return translate(exc) if translate is not None else (400, "ModelArts.0101")


def htmx_only(request: Request) -> Response | None:
    """A refusal for a request that is not htmx's (no HX-Request header), else None."""
    if request.headers.get("hx-request") != "true":
        return Response("Use the console's page for this action.", status_code=403)
    return None


def remember(response: Response, project: str) -> Response:
    """The project opened, for /console to return to (the job list sets it too)."""
    response.set_cookie(PROJECT_COOKIE, project, httponly=True, samesite="strict", path="/console")
    return response


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases (*name): a few lines of them can stand for a document of billions of nodes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not accepted; write the values out")
        return super().compose_node(parent, index)


def parse_text(text: str) -> Any:
    """The create body a user pasted or uploaded: JSON (text starting with '{' or '['), checked exactly as
    the API checks a body (core/inputs.py); or YAML, turned into the JSON the CLI would send and checked
    the same way."""
    raw = text.encode("utf-8")
    if not text.lstrip().startswith(("{", "[")) and raw.strip() and len(raw) <= MAX_BODY:
        try:
            doc = yaml.load(text, Loader=_NoAliases)  # a SafeLoader, without aliases
        except yaml.YAMLError as exc:
            raise errors.InvalidJsonBody(f"The request body is neither JSON nor valid YAML: {exc}.") from None
        except RecursionError:
            raise errors.InvalidJsonBody("The YAML document is nested too deeply.") from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise errors.InvalidJsonBody(f"The YAML document has a value that cannot be read: {exc}.") from None
        try:
            raw = orjson.dumps(doc)  # dates become strings, as JSON has none
        except TypeError as exc:
            raise errors.InvalidJsonBody(f"The YAML document has no JSON equivalent: {exc}.") from None
    return parse_json_body(raw)


def example_body(catalog: Catalog) -> str:
    """A create body for the form's placeholder, on this server's smallest flavor and default engine."""
    flavor = min(catalog.flavors.values(), key=lambda f: (f.gpus, f.cpu_milli, f.memory_mb), default=None)
    engine = catalog.engines.get(catalog.default_engine)
    return "\n".join([
        "kind: job", "metadata:", "  name: my-job", "algorithm:", "  command: echo hello from openarts",
        *(["  engine:", f"    engine_id: {engine.engine_id}"] if engine is not None else []),
        "spec:", "  resource:", f"    flavor_id: {flavor.flavor_id if flavor else 'FLAVOR'}", "    node_count: 1"])


def _form(request: Request, project: str, text: str = "", error: tuple[str, str] | None = None,
          status: int = 200) -> Response:
    return TEMPLATES.TemplateResponse(request, "submit.html" if not request.headers.get("hx-request") else
                                      "_submit_form.html", {
        "project": project, "text": text, "error": error, "max_body": MAX_BODY,
        "example": example_body(jobs_of(request).catalog)}, status_code=status)


async def submit_form(request: Request) -> Response:
    """The page to submit a job: paste or upload a ModelArts create body (JSON or YAML)."""
    project = request.path_params["project_id"]
    return remember(_form(request, project), project)


async def submit(request: Request) -> Response:
    """Create the job as POST /v2/{project_id}/training-jobs does; to its page on success, else the form
    again, the text kept and the ModelArts error shown."""
    refused = htmx_only(request)
    if refused is not None:
        return refused
    project = request.path_params["project_id"]
    try:  # the form has one field; a body of many (a flood of '&') is refused, not parsed
        form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True,
                        max_num_fields=8)
    except ValueError:
        exc = errors.InvalidJsonBody("The form has too many fields: send the job's body alone.")
        status, code = modelarts_error(request, exc)
        return _form(request, project, "", (code, exc.message), status)
    text = form.get("body", [""])[0]
    try:
        body = await asyncio.to_thread(parse_text, text)  # YAML parses in Python: off the event loop
        doc = await jobs_of(request).create(project, str(request.scope.get("openarts.user", "")), body)
    except errors.OpenartsError as exc:
        status, code = modelarts_error(request, exc)
        return _form(request, project, text, (code, exc.message), status)
    where = f"/console/{project}/jobs/{doc['metadata']['id']}"
    return Response(status_code=201, headers={"HX-Redirect": where, "Location": where})


async def delete(request: Request) -> Response:
    """Delete a job as DELETE /v2/{project_id}/training-jobs/{job_id} does (a job still running is
    terminated first, then removed); back to the job list, or the ModelArts error shown."""
    refused = htmx_only(request)
    if refused is not None:
        return refused
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    try:
        jobs_of(request).delete(project, [job_id])
    except errors.OpenartsError as exc:
        status, code = modelarts_error(request, exc)
        return TEMPLATES.TemplateResponse(request, "_error.html", {"error": (code, exc.message)},
                                          status_code=status)
    return Response(status_code=200, headers={"HX-Redirect": f"/console/{project}/jobs"})


ACTION_ROUTES = [  # before pages.py's: /jobs/new is no job id
    Route("/console/{project_id}/jobs/new", submit_form, methods=["GET"]),
    Route("/console/{project_id}/jobs/new", submit, methods=["POST"]),
    Route("/console/{project_id}/jobs/{job_id}/delete", delete, methods=["POST"]),
]
