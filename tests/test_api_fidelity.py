"""ModelArts fidelity, through the official SDK against a real server.

- Every training operation of the SDK (tests/data/training-operations.tsv, from the reference) answers
  either its real response, deserialized by the SDK with nothing lost and every value of the type its
  response model declares, or 501 ModelArts.0501 naming the operation, or, for an operation this deployment
  has no service for (api/unimplemented.py NOT_SUPPORTED), 501 ModelArts.4204 naming it: never a gateway 404.
- The job document holds no invented values: each field comes from the request, the catalog or the
  store, or is left out; the engine block comes from the catalog however the request named the engine.
- Gateway errors carry the APIGW prefix (the "not ready" 204s: tests/test_api_observe.py).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import huaweicloudsdkmodelarts.v1.model as models
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ServerResponseException

from conftest import Server, job_body, wait_for
from helpers import create_id, run_to_end, show_json, wait_phase
from openarts.api.unimplemented import NOT_SUPPORTED
from sdk_types import round_trip_losses, type_errors

OPERATIONS = Path(__file__).parent / "data" / "training-operations.tsv"
SUCCESS = {"create_training_job": 201, "delete_training_job": 202, "batch_delete_training_job": 202,
           "stop_training_job": 202, "create_train_job_tags": 204, "delete_train_job_tags": 204}
RETRY_ONCE = {"fault-tolerance/job-retry-num": "1", "fault-tolerance/job-unconditional-retry": "true"}
FAIL_FIRST = 'f="$MA_JOB_DIR/.tried"; if [ -e "$f" ]; then echo second; exit 0; fi; touch "$f"; exit 3'


def _camel(operation: str) -> str:
    return "".join(part.title() for part in operation.split("_"))


def _operations() -> list[dict[str, str]]:
    with OPERATIONS.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _check_response(operation: str, resp: Any) -> list[str]:
    """Type errors and round-trip losses of one SDK response (empty for a body-less answer)."""
    model = _camel(operation) + "Response"
    raw = resp.to_json_object()
    if raw is None:
        return []
    return [f"{operation}: {p}" for p in type_errors(model, raw) + round_trip_losses(model, resp)]


@pytest.fixture
def jobs(server: Server, sdk: Any, tmp_path: Path) -> dict[str, str]:
    """Jobs in the states the operations need: ended (with outputs and parameters, engine by name),
    recovered once, running (two workers), and two to delete."""
    out: dict[str, str] = {}
    engines = sdk.show_training_job_engines(models.ShowTrainingJobEnginesRequest()).items
    done = job_body("fidelity-done", command="echo done; echo line2",
                    engine={"engine_name": engines[0].engine_name, "engine_version": engines[0].engine_version},
                    parameters=[{"name": "epochs", "value": "2"}],
                    outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bucket/fidelity/out/"}}}])
    done["metadata"]["annotations"] = {"note": "kept"}
    out["done"] = run_to_end(sdk, done)[0]
    recovered = job_body("fidelity-recovered", command=FAIL_FIRST)
    recovered["metadata"]["annotations"] = RETRY_ONCE
    out["recovered"] = create_id(sdk, recovered)
    out["running"] = create_id(sdk, job_body("fidelity-running", command="sleep 60", node_count=2))
    out["delete"] = create_id(sdk, job_body("fidelity-delete", command="true"))
    out["batch"] = create_id(sdk, job_body("fidelity-batch", command="true"))
    wait_phase(sdk, out["recovered"], timeout=60)
    records = show_json(sdk, out["recovered"])["status"]["running_records"]
    assert records[0]["recover_records"], "the recovered job's document has a recovery record to check"
    wait_phase(sdk, out["running"], "Running")
    wait_for(lambda: show_json(sdk, out["running"])["status"].get("start_time"), message="running job started")
    return out


def _implemented_calls(jobs: dict[str, str]) -> dict[str, list[Callable[[], Any]]]:
    """operation -> requests that must get its real response (several for the job document)."""
    m = models
    done, running = jobs["done"], jobs["running"]
    details = [lambda j=jobs[k]: m.ShowTrainingJobDetailsRequest(training_job_id=j)  # type: ignore[misc]
               for k in ("done", "recovered", "running")]  # the other two are deleted on the way
    return {
        "create_training_job": [lambda: m.CreateTrainingJobRequest(body=job_body("fidelity-new", command="true"))],
        "show_training_job_details": details,
        "list_training_jobs": [lambda: m.ListTrainingJobsRequest(body={"limit": 50})],
        "change_training_job_description": [
            lambda: m.ChangeTrainingJobDescriptionRequest(training_job_id=done, body={"description": "changed"})],
        "delete_training_job": [lambda: m.DeleteTrainingJobRequest(training_job_id=jobs["delete"])],
        "batch_delete_training_job": [lambda: m.BatchDeleteTrainingJobRequest(
            body={"jobs": [{"kind": "job", "metadata": {"id": jobs["batch"]}}]})],
        "stop_training_job": [lambda: m.StopTrainingJobRequest(training_job_id=running,
                                                               body={"action_type": "terminate"})],
        "list_training_job_events": [
            lambda: m.ListTrainingJobEventsRequest(training_job_id=done),
            lambda: m.ListTrainingJobEventsRequest(training_job_id=done, start_time="0", end_time="99999999999999")],
        "list_training_job_stages": [lambda: m.ListTrainingJobStagesRequest(training_job_id=jobs["recovered"])],
        "list_training_job_tasks": [lambda: m.ListTrainingJobTasksRequest(training_job_id=running),
                                    lambda: m.ListTrainingJobTasksRequest(training_job_id=done, schedule_count=1)],
        "show_training_job_logs_preview": [
            lambda: m.ShowTrainingJobLogsPreviewRequest(training_job_id=done, task_id="worker-0")],
        "show_training_job_logs_from_aom": [
            lambda: m.ShowTrainingJobLogsFromAomRequest(training_job_id=done, task_id="worker-0", lines=1)],
        "show_training_job_metrics": [
            lambda: m.ShowTrainingJobMetricsRequest(training_job_id=running, task_id="worker-1")],
        # the smaller operations (tests/test_small_operations.py)
        "list_event_categories": [lambda: m.ListEventCategoriesRequest(),
                                  lambda: m.ListEventCategoriesRequest(flavor_type="CPU")],
        "notify_training_job_information": [lambda: m.NotifyTrainingJobInformationRequest(
            training_job_id=done, task_id="worker-0", report_type="training-event",
            body=m.ReportEventBody(type="ProfilingRunning"))],
        "show_training_job_route_plan": [lambda: m.ShowTrainingJobRoutePlanRequest(training_job_id=done),
                                         lambda: m.ShowTrainingJobRoutePlanRequest(training_job_id=running)],
        "show_training_flavor_max_available_resource": [lambda: m.ShowTrainingFlavorMaxAvailableResourceRequest(
            flavor_id="modelarts.local.cpu.1u")],
        "show_training_job_flavors": [lambda: m.ShowTrainingJobFlavorsRequest(),
                                      lambda: m.ShowTrainingJobFlavorsRequest(flavor_type="CPU")],
        "show_training_job_engines": [lambda: m.ShowTrainingJobEnginesRequest()],
        "validate_training_job_name": [lambda: m.ValidateTrainingJobNameRequest(job_name="fidelity-done")],
        "show_training_quotas": [lambda: m.ShowTrainingQuotasRequest()],
        "modify_training_quotas": [lambda: m.ModifyTrainingQuotasRequest(
            body={"quotas": [{"resource": "gpus", "quota": 4}]})],
        "show_search_algorithms": [lambda: m.ShowSearchAlgorithmsRequest()],
        "show_auto_search_yaml_templates_info": [lambda: m.ShowAutoSearchYamlTemplatesInfoRequest()],
        "show_auto_search_yaml_template_content": [lambda: m.ShowAutoSearchYamlTemplateContentRequest(
            algorithm_type="search_algorithm", algorithm_name="tpe_search")],
        # tags (in the table's order: create two, delete one, then the reads see the other)
        "create_train_job_tags": [lambda: m.CreateTrainJobTagsRequest(training_job_id=done, body=m.CreateTmsTagsRequest(
            tags=[m.TmsTag(key="fidelity", value="kept"), m.TmsTag(key="gone", value="")]))],
        "delete_train_job_tags": [lambda: m.DeleteTrainJobTagsRequest(training_job_id=done, body=m.DeleteTmsTagsRequest(
            tags=[m.TmsTag(key="gone")]))],
        "show_train_job_tags": [lambda: m.ShowTrainJobTagsRequest(training_job_id=done)],
        "list_training_job_tags": [lambda: m.ListTrainingJobTagsRequest(limit=10, offset=0)],
        "list_training_jobs_by_tags": [
            lambda: m.ListTrainingJobsByTagsRequest(body=m.ResourceInstancesFilterReq(
                tags=[m.MutiValueTag(key="fidelity", values=["kept"])])),
            lambda: m.ListTrainingJobsByTagsRequest(limit=2, body=m.ResourceInstancesFilterReq(without_any_tag=True))],
        "count_training_jobs_by_tags": [lambda: m.CountTrainingJobsByTagsRequest(body=m.CountResourceInstancesReq(
            matches=[m.CountResourceInstancesReqMatches(key="resource_name", value="fidelity")]))],
    }


# Served, and checked against their models the same way where a search with trials exists to ask about
# (tests/test_autosearch_api.py seeds one): the operations on a search's trials.
TESTED_ELSEWHERE = {"show_auto_search_trials", "show_auto_search_per_trial", "show_auto_search_trial_early_stop",
                    "show_auto_search_params_analysis", "show_auto_search_param_analysis_result_path"}
# The training experiments' operations: tests/test_experiments.py checks each against its model the same way.
TESTED_ELSEWHERE |= {"create_training_experiment", "list_training_experiments", "show_training_experiment_details",
                     "change_training_experiment", "delete_training_experiment", "check_training_experiment"}


def _placeholder_request(operation: str, job_id: str = "a-job") -> Any:
    """An SDK request for an operation openarts does not implement: every path parameter filled."""
    cls = getattr(models, _camel(operation) + "Request")
    values = {"training_job_id": job_id, "task_id": "worker-0", "experiment_id": "an-experiment",
              "trial_id": "1", "parameter_name": "lr", "report_type": "progress", "algorithm_type": "t",
              "algorithm_name": "n", "body": {}}
    return cls(**{k: v for k, v in values.items() if k in cls.openapi_types})


def test_every_training_operation_answers_its_response_or_501(server: Server, sdk: Any,
                                                              jobs: dict[str, str]) -> None:
    implemented = _implemented_calls(jobs)
    operations = _operations()
    assert len(operations) == 48 and set(implemented) <= {op["sdk_operation"] for op in operations}
    problems: list[str] = []
    for op in operations:
        name = op["sdk_operation"]
        call = getattr(sdk, name)
        if name in TESTED_ELSEWHERE:
            continue
        if name in implemented:
            for make in implemented[name]:
                resp = call(make())
                expected = SUCCESS.get(name, 200)
                if resp.status_code != expected:
                    problems.append(f"{name}: status {resp.status_code}, expected {expected}")
                problems += _check_response(name, resp)
            continue
        refused = name in {n for _method, _path, n, _why in NOT_SUPPORTED}  # asked of a job that exists
        with pytest.raises(ServerResponseException) as info:
            call(_placeholder_request(name, jobs["done"]) if refused else _placeholder_request(name))
        exc = info.value
        code = "ModelArts.4204" if refused else "ModelArts.0501"
        if (exc.status_code, exc.error_code) != (501, code) or name not in exc.error_msg:
            problems.append(f"{name} ({op['method']} {op['path']}): {exc.status_code} {exc.error_code} "
                            f"{exc.error_msg}")
        assert exc.request_id
    assert not problems, "\n".join(problems)


def test_the_job_document_invents_nothing(server: Server, sdk: Any) -> None:
    engines = sdk.show_training_job_engines(models.ShowTrainingJobEnginesRequest()).to_json_object()["items"]
    engine = engines[0]
    assert set(engine) == {"engine_id", "engine_name", "engine_version"}, "no constant v1_compatible/run_user"
    by_name = create_id(sdk, job_body("by-name", command="true", engine={
        "engine_name": engine["engine_name"], "engine_version": engine["engine_version"]}))
    by_id = create_id(sdk, job_body("by-id", command="true", engine={"engine_id": engine["engine_id"]}))
    default = create_id(sdk, job_body("by-default", command="true"))
    for job_id in (by_name, by_id, default):
        doc = show_json(sdk, wait_phase(sdk, job_id).metadata.id)
        assert doc["algorithm"]["engine"] == engine, "the engine block comes from the catalog"
        resource = doc["spec"]["resource"]
        for invented in ("policy", "pool_name"):
            assert invented not in resource, invented
        assert resource["pool_id"] == "pool-local" and resource["node_count"] == 1
        assert "annotations" not in doc["metadata"], "no annotations given: none shown"
        assert all(set(t) == {"task", "ip", "schedule_count"} for t in doc["status"]["task_ips"]), "no host_ip"
        assert type_errors("ShowTrainingJobDetailsResponse", doc) == []
    listed = sdk.list_training_jobs(models.ListTrainingJobsRequest(body={})).to_json_object()
    assert "ai_project" not in listed
    tasks = sdk.list_training_job_tasks(models.ListTrainingJobTasksRequest(training_job_id=by_id)).to_json_object()
    assert tasks == [{"task": "worker-0", "ip": "127.0.0.1", "schedule_count": 1}]
    flavor = sdk.show_training_job_flavors(models.ShowTrainingJobFlavorsRequest()).flavors[0]
    assert flavor.support_engines == ",".join(sorted(e["engine_id"] for e in engines))


def test_gateway_errors_use_the_apigw_prefix(server: Server) -> None:
    with httpx.Client(base_url=server.url) as http:
        unknown = http.get("/v2/p/no-such-api")
        assert unknown.status_code == 404
        assert unknown.json()["error_code"] == "APIGW.0101"
        assert unknown.json()["request_id"] == unknown.headers["x-request-id"]
        wrong_method = http.patch("/v2/p/training-jobs")
        assert (wrong_method.status_code, wrong_method.json()["error_code"]) == (405, "APIGW.0101")
