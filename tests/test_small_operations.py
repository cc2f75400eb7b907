"""The smaller training operations, through the official SDK against a real server:

- event categories: the one table of core/notify.py, what spec.notification.events accepts, and what a
  job's events report when its notification announces them;
- a task's report: an event of the job, source "Task", naming the task; task, report type and body checked;
- the route plan: the ranks the workers really run with (RANK), over the latest placement or node_count;
- a flavor's most available resources: from the capacity free now, changing as jobs start and end;
- fine-tuning and save-image: 501 ModelArts.4204 "not supported by this deployment", once the job is found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import huaweicloudsdkmodelarts.v1.model as m
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ServerResponseException

from conftest import Server, job_body, wait_for
from helpers import create_id, expect_error, preview, run_to_end, show_json, wait_phase
from openarts.api.unimplemented import NOT_SUPPORTED
from openarts.core.notify import CATEGORIES, DEFAULT_EVENTS, EVENTS
from sdk_types import round_trip_losses, type_errors

SMALL = """
[server]
terminate_grace_seconds = 3
reconcile_interval_seconds = 0.5

[[nodes]]
name = "small"
cpu_cores = 4
memory_gb = 8

[[flavors]]
flavor_id = "test.cpu.1u"
cpu_cores = 1
memory_gb = 2

[[flavors]]
flavor_id = "test.cpu.8u"
cpu_cores = 8
memory_gb = 2
"""


def _typed(model: str, resp: Any) -> None:
    raw = resp.to_json_object()
    assert not type_errors(model, raw), type_errors(model, raw)
    assert not round_trip_losses(model, resp), round_trip_losses(model, resp)


def _events(server: Server, job_id: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server.api}/training-jobs/{job_id}/events", params={"limit": 1000}, timeout=10)
                .json()["events"])


def test_event_categories_are_the_events_a_notification_announces(server: Server, sdk: Any) -> None:
    resp = sdk.list_event_categories(m.ListEventCategoriesRequest())
    assert resp.status_code == 200
    _typed("ListEventCategoriesResponse", resp)
    listed = resp.to_json_object()["event-categories"]
    assert [c["id"] for c in listed] == list(EVENTS) == [c.id for c in CATEGORIES]
    assert all(c["name"] == c["id"] and c["description"] for c in listed)
    assert all(c["notification"] is (c["id"] in DEFAULT_EVENTS) for c in listed)
    cpu = sdk.list_event_categories(m.ListEventCategoriesRequest(flavor_type="CPU")).to_json_object()
    assert cpu["event-categories"] == listed  # no category depends on the flavor type here
    exc = expect_error(lambda: sdk.list_event_categories(m.ListEventCategoriesRequest(flavor_type="TPU")),
                       400, "ModelArts.2764")
    assert "flavor_type" in exc.error_msg

    # every listed category is one a job's notification may name; those that happen are reported as events
    body = job_body("categories", command="true")
    body["spec"]["notification"] = {"topic_urn": "urn:smn:cn-north-4:abc:training", "events": [c["id"] for c in listed]}
    job_id, job = run_to_end(sdk, body, timeout=60)
    assert job.status.phase == "Completed"
    ids = {c["id"] for c in listed}

    def announced() -> set[str]:
        return {e["message"].split()[1] for e in _events(server, job_id)
                if e["source"] == "Notification" and e["message"].startswith("Notification ")}

    got = wait_for(lambda: {"JobStarted", "JobCompleted"} <= announced() and announced(), timeout=30,
                   message="the start and the end announced")
    assert got <= ids


def test_a_task_reports_a_training_event(server: Server, sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("reporter", command="true", node_count=2), timeout=60)

    def report(task: str = "worker-1", kind: str = "training-event", body: Any = None, job: str = job_id) -> Any:
        return sdk.notify_training_job_information(m.NotifyTrainingJobInformationRequest(
            training_job_id=job, task_id=task, report_type=kind,
            body=m.ReportEventBody(type="ProfilingRunning") if body is None else body))

    resp = report()
    assert resp.status_code == 200 and resp.to_json_object() in (None, {})
    reported = [e for e in _events(server, job_id) if e["source"] == "Task"]
    assert len(reported) == 1 and reported[0]["level"] == "Info"
    assert "worker-1" in reported[0]["message"] and "ProfilingRunning" in reported[0]["message"]
    page = sdk.list_training_job_events(m.ListTrainingJobEventsRequest(training_job_id=job_id, pattern="Profiling"))
    assert [e.source for e in page.events] == ["Task"]

    assert "worker-2" in expect_error(lambda: report(task="worker-2"), 400, "ModelArts.2775").error_msg
    expect_error(lambda: report(task="chief-0"), 400, "ModelArts.2775")
    expect_error(lambda: report(job="no-such-job"), 400, "ModelArts.2775")
    assert "report_type" in expect_error(lambda: report(kind="progress"), 400, "ModelArts.2788").error_msg
    for bad in ({"type": ""}, {"type": "x" * 65}, {"type": "a b"}, {"type": 3}, {}, {"type": "A", "extra": "1"}):
        expect_error(lambda b=bad: report(body=b), 400, "ModelArts.2788")  # type: ignore[misc]
    assert len([e for e in _events(server, job_id) if e["source"] == "Task"]) == 1  # nothing else recorded


def test_the_route_plan_is_the_ranks_the_workers_run_with(server: Server, sdk: Any) -> None:
    job_id = create_id(sdk, job_body("ranks", command='echo "rank=$RANK index=$VC_TASK_INDEX"', node_count=3))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    resp = sdk.show_training_job_route_plan(m.ShowTrainingJobRoutePlanRequest(training_job_id=job_id))
    _typed("ShowTrainingJobRoutePlanResponse", resp)
    assert (resp.job_id, resp.status) == (job_id, "failed")  # openarts plans no routes: ModelArts' default mapping
    pairs = [pair.split("-") for pair in resp.rank_mapping.split(",")]
    assert len(pairs) == 3
    for rank, worker in pairs:
        log = preview(sdk, job_id, f"worker-{worker}").content
        assert f"rank={rank} index={worker}" in log
    expect_error(lambda: sdk.show_training_job_route_plan(m.ShowTrainingJobRoutePlanRequest(
        training_job_id="no-such-job")), 400, "ModelArts.2775")


def _most(sdk: Any, flavor: str = "test.cpu.1u", pool: str | None = None) -> tuple[int, int]:
    resp = sdk.show_training_flavor_max_available_resource(
        m.ShowTrainingFlavorMaxAvailableResourceRequest(flavor_id=flavor, pool_id=pool))
    _typed("ShowTrainingFlavorMaxAvailableResourceResponse", resp)
    return resp.cpu_core_num, resp.mem_size


def test_a_flavors_most_available_resources_follow_free_capacity(
        make_server: Callable[..., Server], sdk_for: Callable[[Server], Any]) -> None:
    """A 4-core 8 GB node and a 1-core 2 GB flavor: 4 workers fit while the node is idle, fewer as
    sleeping jobs take it, again more once one ends."""
    server = make_server(SMALL)
    sdk = sdk_for(server)
    assert _most(sdk) == (4, 8) == _most(sdk, pool="pool-local")
    assert _most(sdk, "test.cpu.8u") == (0, 0)  # no node can hold one: nothing available
    expect_error(lambda: _most(sdk, "no.such.flavor"), 400, "ModelArts.2781")
    assert "pool_id" in expect_error(lambda: _most(sdk, pool="pool-x"), 400, "ModelArts.2764").error_msg
    expect_error(lambda: sdk.show_training_flavor_max_available_resource(
        m.ShowTrainingFlavorMaxAvailableResourceRequest()), 400, "ModelArts.2764")

    def flavored(name: str, nodes: int) -> dict[str, Any]:
        body = job_body(name, command="sleep 60", node_count=nodes)
        body["spec"]["resource"]["flavor_id"] = "test.cpu.1u"
        return body

    one = create_id(sdk, flavored("one", 1))
    wait_phase(sdk, one, "Running")
    assert _most(sdk) == (3, 6)
    three = create_id(sdk, flavored("three", 3))
    wait_phase(sdk, three, "Running")
    assert _most(sdk) == (0, 0)

    # a job that cannot be placed yet: its route plan is the default over spec.resource.node_count
    waiting = create_id(sdk, flavored("waiting", 2))
    wait_for(lambda: show_json(sdk, waiting)["status"]["phase"] == "Pending", message="the third job queued")
    plan = sdk.show_training_job_route_plan(m.ShowTrainingJobRoutePlanRequest(training_job_id=waiting))
    assert (plan.status, plan.rank_mapping) == ("failed", "0-0,1-1")

    sdk.stop_training_job(m.StopTrainingJobRequest(training_job_id=three, body={"action_type": "terminate"}))
    wait_phase(sdk, three, timeout=30)
    # the waiting job (2 workers) starts on 2 of the 3 cores freed: 1 left
    wait_for(lambda: show_json(sdk, waiting)["status"]["phase"] == "Running", message="the waiting job started")
    assert _most(sdk) == (1, 2)
    for job in (one, waiting):
        sdk.stop_training_job(m.StopTrainingJobRequest(training_job_id=job, body={"action_type": "terminate"}))
        wait_phase(sdk, job, timeout=30)
    assert _most(sdk) == (4, 8)


def _refused_request(operation: str, job_id: str) -> Any:
    cls = getattr(m, "".join(part.title() for part in operation.split("_")) + "Request")
    values = {"training_job_id": job_id, "task_id": "worker-0", "body": {}}
    return cls(**{k: v for k, v in values.items() if k in cls.openapi_types})


@pytest.mark.parametrize("operation", [op for _method, _path, op, _why in NOT_SUPPORTED])
def test_fine_tuning_and_save_image_are_not_supported_here(server: Server, sdk: Any, operation: str) -> None:
    job_id, _ = run_to_end(sdk, job_body(f"plain-{operation.replace('_', '-')}", command="true"), timeout=60)
    call = getattr(sdk, operation)
    with pytest.raises(ServerResponseException) as info:
        call(_refused_request(operation, job_id))
    exc = info.value
    assert (exc.status_code, exc.error_code) == (501, "ModelArts.4204")
    assert operation in exc.error_msg and "not supported by this deployment" in exc.error_msg
    why = "image builder" if "image" in operation else "fine-tuning service"
    assert why in exc.error_msg and exc.request_id
    expect_error(lambda: call(_refused_request(operation, "no-such-job")), 400, "ModelArts.2775")
