"""HTTP routes. Each handler parses the request, calls a service, and returns JSON: nothing else."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from openarts.core import errors
from openarts.core.inputs import parse_json_body
from openarts.service.algorithms import AlgorithmService
from openarts.service.catalog import CatalogService
from openarts.service.experiments import ExperimentService
from openarts.service.jobs import JobService
from openarts.service.observe import ObserveService
from openarts.service.search import SearchService
from openarts.service.tags import TagService


def ok(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def empty(status: int) -> Response:
    return Response(b"", status_code=status)


def is_json_media(content_type: str) -> bool:
    """application/json (any parameters: the SDK sends application/json;charset=UTF-8) or a +json type."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def body_json(request: Request, required: bool = True,
                    invalid: type[errors.InvalidRequest] = errors.InvalidRequest) -> Any:
    """The body of a JSON operation: declared as JSON when it declares a type (415 otherwise), at most
    inputs.MAX_BODY bytes, valid JSON, at most inputs.MAX_DEPTH levels deep, and no integer beyond 64 bits
    (`invalid`, the operation's invalid-parameter error, names where)."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    if raw.strip() and content_type is not None and not is_json_media(content_type):
        raise errors.UnsupportedMediaType(
            f"Unsupported Content-Type {content_type[:100]!r}: send the body as application/json.")
    return parse_json_body(raw, required, invalid)  # shared with the console's submit form


def _jobs(request: Request) -> JobService:
    svc: JobService = request.app.state.jobs
    return svc


def _observe(request: Request) -> ObserveService:
    svc: ObserveService = request.app.state.observe
    return svc


def _catalog(request: Request) -> CatalogService:
    svc: CatalogService = request.app.state.catalog
    return svc


def _search(request: Request) -> SearchService:
    svc: SearchService = request.app.state.search
    return svc


def _tags(request: Request) -> TagService:
    svc: TagService = request.app.state.tags
    return svc


def _experiments(request: Request) -> ExperimentService:
    svc: ExperimentService = request.app.state.experiments
    return svc


def _algorithms(request: Request) -> AlgorithmService:
    svc: AlgorithmService = request.app.state.algorithms
    return svc


def _user(request: Request) -> str:
    return str(request.scope.get("openarts.user", ""))


async def create_job(request: Request) -> Response:
    body = await body_json(request)
    return ok(await _jobs(request).create(request.path_params["project_id"], _user(request), body), 201)


async def show_job(request: Request) -> Response:
    p = request.path_params
    return Response(_jobs(request).get_json(p["project_id"], p["job_id"]), media_type="application/json")


async def search_jobs(request: Request) -> Response:
    body = await body_json(request, required=False, invalid=errors.QueryParamsError)
    return ok(_jobs(request).search(request.path_params["project_id"], body))


async def update_job(request: Request) -> Response:
    p = request.path_params
    _jobs(request).update(p["project_id"], p["job_id"], await body_json(request))
    return empty(200)


async def delete_job(request: Request) -> Response:
    p = request.path_params
    _jobs(request).delete(p["project_id"], [p["job_id"]])
    return empty(202)


async def batch_delete(request: Request) -> Response:
    body = await body_json(request)
    items = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or len(items) > 1000:
        raise errors.InvalidRequest("Invalid parameter jobs: an array of 1 to 1000 {metadata: {id}} objects.")
    ids = []
    for item in items:
        meta = item.get("metadata") if isinstance(item, dict) else None
        job_id = meta.get("id") if isinstance(meta, dict) else None
        if not isinstance(job_id, str):
            raise errors.InvalidRequest("Invalid parameter jobs[].metadata.id: a job id is required.")
        ids.append(job_id)
    _jobs(request).delete(request.path_params["project_id"], ids)
    return empty(202)


async def job_action(request: Request) -> Response:
    p = request.path_params
    return ok(_jobs(request).terminate(p["project_id"], p["job_id"], await body_json(request)), 202)


async def list_tasks(request: Request) -> Response:
    p = request.path_params
    return ok(_observe(request).tasks(p["project_id"], p["job_id"], request.query_params.get("schedule_count")))


async def log_preview(request: Request) -> Response:
    p = request.path_params
    observe = _observe(request)
    path = observe.task_log(p["project_id"], p["job_id"], p["task_id"], request.query_params.get("attempt"))
    return ok(await observe.off_loop(observe.preview, path))  # up to 5 MB read: off the event loop


async def log_url(request: Request) -> Response:
    p = request.path_params
    content_type = request.query_params.get("Content-Type") or request.headers.get("content-type", "")
    return ok(await _observe(request).log_url(p["project_id"], p["job_id"], p["task_id"], content_type,
                                              str(request.base_url), request.query_params.get("attempt")))


async def log_download(request: Request) -> Response:
    """A signed log link (log_url's): served without AK/SK (api/auth.py), to a browser or a download."""
    p = request.path_params
    path, disposition = _observe(request).signed_log(p["project_id"], p["job_id"], p["task_id"],
                                                     dict(request.query_params))
    return FileResponse(path, media_type="text/plain; charset=utf-8", content_disposition_type=disposition,
                        filename=f"{p['job_id']}-{p['task_id']}.log")


async def log_lines(request: Request) -> Response:
    p, qp = request.path_params, request.query_params
    observe = _observe(request)
    path = observe.task_log(p["project_id"], p["job_id"], p["task_id"], qp.get("attempt"))
    query = observe.line_query(qp.get("base_line"), qp.get("lines"), qp.get("order"))
    return ok(await observe.off_loop(observe.lines, path, query))


async def job_events(request: Request) -> Response:
    p = request.path_params
    return ok(_observe(request).events(p["project_id"], p["job_id"], dict(request.query_params)))


async def job_stages(request: Request) -> Response:
    p = request.path_params
    return ok(_observe(request).stages(p["project_id"], p["job_id"]))


async def job_metrics(request: Request) -> Response:
    p = request.path_params
    return ok(_observe(request).metrics(p["project_id"], p["job_id"], p["task_id"]))


async def flavors(request: Request) -> Response:
    return ok(_catalog(request).flavors(request.query_params.get("flavor_type")))


async def engines(request: Request) -> Response:
    return ok(_catalog(request).engines())


async def job_names(request: Request) -> Response:
    name = request.query_params.get("job_name")
    if not name:
        raise errors.QueryParamsError("job_name is required.")
    return ok({"is_duplicate": _jobs(request).name_taken(request.path_params["project_id"], name)})


async def show_quotas(request: Request) -> Response:
    return ok(_jobs(request).quotas(request.path_params["project_id"], request.query_params.get("resource")))


async def modify_quotas(request: Request) -> Response:
    return ok(_jobs(request).set_quotas(request.path_params["project_id"], await body_json(request)))


async def event_categories(request: Request) -> Response:
    return ok(_catalog(request).event_categories(request.query_params.get("flavor_type")))


async def flavor_resources(request: Request) -> Response:
    qp = request.query_params
    return ok(_jobs(request).flavor_resources(qp.get("flavor_id"), qp.get("pool_id")))


async def task_report(request: Request) -> Response:
    p = request.path_params
    _jobs(request).report(p["project_id"], p["job_id"], p["task_id"], p["report_type"], await body_json(request))
    return empty(200)


async def route_plan(request: Request) -> Response:
    p = request.path_params
    return ok(_observe(request).route_plan(p["project_id"], p["job_id"]))


async def search_algorithms(request: Request) -> Response:
    return ok(_search(request).algorithms())


async def autosearch_templates(request: Request) -> Response:
    return ok(_search(request).templates())


async def autosearch_template(request: Request) -> Response:
    p = request.path_params
    return ok(_search(request).template(p["algorithm_type"], p["algorithm_name"]))


async def autosearch_trials(request: Request) -> Response:
    p, qp = request.path_params, request.query_params
    return ok(_search(request).trials(p["project_id"], p["job_id"], qp.get("limit"), qp.get("offset")))


async def autosearch_trial(request: Request) -> Response:
    p = request.path_params
    return ok(_search(request).trial(p["project_id"], p["job_id"], p["trial_id"]))


async def autosearch_early_stop(request: Request) -> Response:
    p = request.path_params
    return ok(_search(request).early_stop(p["project_id"], p["job_id"], p["trial_id"]))


async def autosearch_analysis(request: Request) -> Response:
    p = request.path_params
    return ok(await _search(request).analysis(p["project_id"], p["job_id"]))


async def autosearch_analysis_plot(request: Request) -> Response:
    p = request.path_params
    return ok(_search(request).analysis_plot(p["project_id"], p["job_id"], p["parameter_name"]))


async def autosearch_plot(request: Request) -> Response:
    p = request.path_params
    return FileResponse(_search(request).plot(p["project_id"], p["job_id"], p["parameter_name"]),
                        media_type="image/svg+xml")


async def show_job_tags(request: Request) -> Response:
    p = request.path_params
    return ok(_tags(request).show(p["project_id"], p["job_id"]))


async def create_job_tags(request: Request) -> Response:
    p = request.path_params
    _tags(request).create(p["project_id"], p["job_id"], await body_json(request))
    return empty(204)


async def delete_job_tags(request: Request) -> Response:
    p = request.path_params
    _tags(request).delete(p["project_id"], p["job_id"], await body_json(request))
    return empty(204)


async def project_tags(request: Request) -> Response:
    qp = request.query_params
    return ok(_tags(request).project_tags(request.path_params["project_id"], qp.get("limit"), qp.get("offset")))


async def filter_tagged_jobs(request: Request) -> Response:
    qp = request.query_params
    body = await body_json(request, required=False)
    return ok(_tags(request).filter(request.path_params["project_id"], body, qp.get("limit"), qp.get("offset")))


async def count_tagged_jobs(request: Request) -> Response:
    qp = request.query_params
    body = await body_json(request, required=False)
    return ok(_tags(request).count(request.path_params["project_id"], body, qp.get("limit"), qp.get("offset")))


async def create_experiment(request: Request) -> Response:
    body = await body_json(request)
    return ok(_experiments(request).create(request.path_params["project_id"], body), 201)


async def list_experiments(request: Request) -> Response:
    return ok(_experiments(request).page(request.path_params["project_id"], dict(request.query_params)))


async def show_experiment(request: Request) -> Response:
    p = request.path_params
    return ok(_experiments(request).show(p["project_id"], p["experiment_id"]))


async def change_experiment(request: Request) -> Response:
    p = request.path_params
    return ok(_experiments(request).change(p["project_id"], p["experiment_id"], await body_json(request)))


async def delete_experiment(request: Request) -> Response:
    p = request.path_params
    _experiments(request).delete(p["project_id"], p["experiment_id"])
    return empty(202)


async def experiment_names(request: Request) -> Response:
    name = request.query_params.get("experiment_name")
    if not name:
        raise errors.QueryParamsError("experiment_name is required.")
    return ok({"is_duplicate": _experiments(request).name_taken(request.path_params["project_id"], name)})


async def create_algorithm(request: Request) -> Response:
    body = await body_json(request)
    return ok(_algorithms(request).create(request.path_params["project_id"], _user(request), body), 201)


async def list_algorithms(request: Request) -> Response:
    return ok(_algorithms(request).page(request.path_params["project_id"], dict(request.query_params)))


async def show_algorithm(request: Request) -> Response:
    p = request.path_params
    return ok(_algorithms(request).show(p["project_id"], p["algorithm_id"]))


async def change_algorithm(request: Request) -> Response:
    p = request.path_params
    return ok(_algorithms(request).change(p["project_id"], p["algorithm_id"], await body_json(request)))


async def delete_algorithm(request: Request) -> Response:
    p = request.path_params
    _algorithms(request).delete(p["project_id"], p["algorithm_id"])
    return empty(204)


async def publish_algorithm(request: Request) -> Response:
    """openarts' extension: a frozen version of the algorithm, named by subscription_id + item_version_id."""
    p = request.path_params
    return ok(_algorithms(request).publish(p["project_id"], p["algorithm_id"]), 201)


async def health(request: Request) -> Response:
    return ok({"status": "ok", "version": request.app.state.version})


async def openapi(request: Request) -> Response:
    return ok(request.app.state.openapi)


P = "/v2/{project_id}"
ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route(f"{P}/training-jobs", create_job, methods=["POST"]),
    Route(f"{P}/training-jobs/batch-delete", batch_delete, methods=["POST"]),
    # literal paths under /training-jobs/ before /training-jobs/{job_id}/...: routes match in this order
    Route(f"{P}/training-jobs/autosearch/yaml-templates", autosearch_templates, methods=["GET"]),
    Route(f"{P}/training-jobs/autosearch/yaml-templates/{{algorithm_type}}/{{algorithm_name}}", autosearch_template,
          methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}", show_job, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}", update_job, methods=["PUT"]),
    Route(f"{P}/training-jobs/{{job_id}}", delete_job, methods=["DELETE"]),
    Route(f"{P}/training-jobs/{{job_id}}/actions", job_action, methods=["POST"]),
    Route(f"{P}/training-jobs/{{job_id}}/tasks", list_tasks, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/tasks/{{task_id}}/logs/preview", log_preview, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/tasks/{{task_id}}/logs/url", log_url, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/tasks/{{task_id}}/logs/download", log_download, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/logs/{{task_id}}", log_lines, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/events", job_events, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/metrics/{{task_id}}", job_metrics, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/stages", job_stages, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/route_plan", route_plan, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/tasks/{{task_id}}/reports/{{report_type}}", task_report, methods=["POST"]),
    Route(f"{P}/training-jobs/{{job_id}}/autosearch-trials", autosearch_trials, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/autosearch-trials/{{trial_id}}", autosearch_trial, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/autosearch-trial-earlystop/{{trial_id}}", autosearch_early_stop,
          methods=["POST"]),
    Route(f"{P}/training-jobs/{{job_id}}/autosearch-parameter-analysis", autosearch_analysis, methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/autosearch-parameter-analysis/{{parameter_name}}", autosearch_analysis_plot,
          methods=["GET"]),
    Route(f"{P}/training-jobs/{{job_id}}/autosearch-parameter-analysis/{{parameter_name}}/plot.svg", autosearch_plot,
          methods=["GET"]),
    Route(f"{P}/training-job-searches", search_jobs, methods=["POST"]),
    Route(f"{P}/training-job-flavors", flavors, methods=["GET"]),
    Route(f"{P}/training-job-engines", engines, methods=["GET"]),
    Route(f"{P}/training-pool-flavors", flavor_resources, methods=["GET"]),
    Route(f"{P}/training-event-categories", event_categories, methods=["GET"]),
    Route(f"{P}/training-job-names", job_names, methods=["GET"]),
    Route(f"{P}/training-quotas", show_quotas, methods=["GET"]),
    Route(f"{P}/training-quotas", modify_quotas, methods=["PUT"]),
    Route(f"{P}/search-algorithms", search_algorithms, methods=["GET"]),
    # training experiments: service/experiments.py
    Route(f"{P}/training-experiments", create_experiment, methods=["POST"]),
    Route(f"{P}/training-experiments", list_experiments, methods=["GET"]),
    Route(f"{P}/training-experiments/{{experiment_id}}", show_experiment, methods=["GET"]),
    Route(f"{P}/training-experiments/{{experiment_id}}", change_experiment, methods=["PUT"]),
    Route(f"{P}/training-experiments/{{experiment_id}}", delete_experiment, methods=["DELETE"]),
    Route(f"{P}/training-experiment-names", experiment_names, methods=["GET"]),
    # algorithms: service/algorithms.py (publish: openarts' extension)
    Route(f"{P}/algorithms", create_algorithm, methods=["POST"]),
    Route(f"{P}/algorithms", list_algorithms, methods=["GET"]),
    Route(f"{P}/algorithms/{{algorithm_id}}", show_algorithm, methods=["GET"]),
    Route(f"{P}/algorithms/{{algorithm_id}}", change_algorithm, methods=["PUT"]),
    Route(f"{P}/algorithms/{{algorithm_id}}", delete_algorithm, methods=["DELETE"]),
    Route(f"{P}/algorithms/{{algorithm_id}}/publish", publish_algorithm, methods=["POST"]),
    # tags (TMS): service/tags.py
    Route(f"{P}/modelarts-training-job/tags", project_tags, methods=["GET"]),
    Route(f"{P}/modelarts-training-job/resource-instances/filter", filter_tagged_jobs, methods=["POST"]),
    Route(f"{P}/modelarts-training-job/resource-instances/count", count_tagged_jobs, methods=["POST"]),
    Route(f"{P}/modelarts-training-job/{{job_id}}/tags", show_job_tags, methods=["GET"]),
    Route(f"{P}/modelarts-training-job/{{job_id}}/tags/create", create_job_tags, methods=["POST"]),
    Route(f"{P}/modelarts-training-job/{{job_id}}/tags/delete", delete_job_tags, methods=["DELETE"]),
]
