"""The ModelArts training operations openarts does not offer. Each answers 501 with a ModelArts error body
naming the operation (core.errors.NotImplementedOperation, ModelArts.0501), so a client learns at once
that the call exists in ModelArts but not here, instead of a gateway 404 (APIGW.0101) that reads like a
typo in the path.

The table is the official SDK's training operations (`training-operations.tsv` in the reference, tested
against it in tests/test_api_fidelity.py) less the ones api/routes.py serves, plus the documented OBS
log link, which the SDK lacks. The body is not read: the answer is the same for any request.

The operations on a job whose service this deployment lacks (fine-tuning, saving an image) are in
NOT_SUPPORTED: they answer 501 ModelArts.4204 ("not supported by this deployment", and why) once the job is
found in the project.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openarts.core import errors
from openarts.service.jobs import JobService

P = "/v2/{project_id}"

# (method, path, the SDK's operation name)
NOT_IMPLEMENTED: list[tuple[str, str, str]] = [
]

# Operations on a job that this deployment answers "not supported here" (core.errors.NotSupportedHere, 501
# ModelArts.4204) once the job is found in the project (a missing one: JobNotFound, as everywhere): the
# service behind them is not part of openarts. (method, path, the SDK's operation name, why)
NO_FINE_TUNING = "openarts has no fine-tuning service: its training jobs are never fine-tuning jobs"
NO_IMAGE_BUILDER = ("openarts has no image builder: it does not save a task's environment as an image "
                    "(ModelArts commits the container and pushes it to SWR)")
NOT_SUPPORTED: list[tuple[str, str, str, str]] = [
    ("POST", f"{P}/training-jobs/{{training_job_id}}/tasks/{{task_id}}/save-image-job", "create_save_image_job",
     NO_IMAGE_BUILDER),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/tasks/{{task_id}}/save-image-job", "show_save_image_job",
     NO_IMAGE_BUILDER),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/ft-detail", "show_ft_detail", NO_FINE_TUNING),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/ft-metrics", "show_ft_metrics", NO_FINE_TUNING),
    ("GET", f"{P}/training-jobs/{{training_job_id}}/ft-artifacts", "list_ft_artifacts", NO_FINE_TUNING),
    ("POST", f"{P}/training-jobs/{{training_job_id}}/ft-artifacts/publish", "publish_ft_artifacts", NO_FINE_TUNING),
]


def _endpoint(method: str, path: str, operation: str) -> Callable[[Request], Awaitable[Response]]:
    async def not_implemented(_request: Request) -> Response:
        raise errors.NotImplementedOperation(operation, method, path.removeprefix(P))

    return not_implemented


def _refusal(method: str, path: str, operation: str, why: str) -> Callable[[Request], Awaitable[Response]]:
    async def not_supported(request: Request) -> Response:
        p = request.path_params
        jobs: JobService = request.app.state.jobs
        jobs.require(p["project_id"], p["training_job_id"])
        raise errors.NotSupportedHere(operation, method, path.removeprefix(P), why)

    return not_supported


UNIMPLEMENTED_ROUTES = [*(Route(path, _endpoint(method, path, op), methods=[method])
                          for method, path, op in NOT_IMPLEMENTED),
                        *(Route(path, _refusal(method, path, op, why), methods=[method])
                          for method, path, op, why in NOT_SUPPORTED)]
