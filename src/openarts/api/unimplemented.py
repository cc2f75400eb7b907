"""The ModelArts training operations openarts does not offer. Each answers 501 with a ModelArts error body
naming the operation (core.errors.NotImplementedOperation, ModelArts.0501), so a client learns at once
that the call exists in ModelArts but not here, instead of a gateway 404 (APIGW.0101) that reads like a
typo in the path.

The table is the official SDK's training operations (`training-operations.tsv` in the reference, tested
against it in tests/test_api_fidelity.py) less the ones api/routes.py serves, plus the documented OBS
log link, which the SDK lacks. The body is not read: the answer is the same for any request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openarts.core import errors

P = "/v2/{project_id}"

# (method, path, the SDK's operation name)
NOT_IMPLEMENTED: list[tuple[str, str, str]] = [
    # training experiments
    ("POST", f"{P}/training-experiments", "create_training_experiment"),
    ("GET", f"{P}/training-experiments", "list_training_experiments"),
    ("GET", f"{P}/training-experiments/{{experiment_id}}", "show_training_experiment_details"),
    ("PUT", f"{P}/training-experiments/{{experiment_id}}", "change_training_experiment"),
    ("DELETE", f"{P}/training-experiments/{{experiment_id}}", "delete_training_experiment"),
    ("GET", f"{P}/training-experiment-names", "check_training_experiment"),
    # tags (TMS)
    ("GET", f"{P}/modelarts-training-job/tags", "list_training_job_tags"),
    ("GET", f"{P}/modelarts-training-job/{{training_job_id}}/tags", "show_train_job_tags"),
    ("POST", f"{P}/modelarts-training-job/{{training_job_id}}/tags/create", "create_train_job_tags"),
    ("DELETE", f"{P}/modelarts-training-job/{{training_job_id}}/tags/delete", "delete_train_job_tags"),
    ("POST", f"{P}/modelarts-training-job/resource-instances/filter", "list_training_jobs_by_tags"),
    ("POST", f"{P}/modelarts-training-job/resource-instances/count", "count_training_jobs_by_tags"),
    # images, reports, routing, event categories, pool flavors
    ("POST", f"{P}/training-jobs/{{training_job_id}}/tasks/{{task_id}}/save-image-job", "create_save_image_job"),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/tasks/{{task_id}}/save-image-job", "show_save_image_job"),
    ("POST", f"{P}/training-jobs/{{training_job_id}}/tasks/{{task_id}}/reports/{{report_type}}",
     "notify_training_job_information"),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/route_plan", "show_training_job_route_plan"),
    ("GET", f"{P}/training-event-categories", "list_event_categories"),
    ("GET", f"{P}/training-pool-flavors", "show_training_flavor_max_available_resource"),
    # fine-tuning
    ("GET", f"{P}/training-jobs/{{training_job_id}}/ft-detail", "show_ft_detail"),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/ft-metrics", "show_ft_metrics"),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/ft-artifacts", "list_ft_artifacts"),
    ("POST", f"{P}/training-jobs/{{training_job_id}}/ft-artifacts/publish", "publish_ft_artifacts"),
]


def _endpoint(method: str, path: str, operation: str) -> Callable[[Request], Awaitable[Response]]:
    async def not_implemented(_request: Request) -> Response:
        raise errors.NotImplementedOperation(operation, method, path.removeprefix(P))

    return not_implemented


UNIMPLEMENTED_ROUTES = [Route(path, _endpoint(method, path, op), methods=[method])
                        for method, path, op in NOT_IMPLEMENTED]
