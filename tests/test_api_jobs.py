"""The job lifecycle through the official SDK: create, show, list/search, change description, stop,
delete, batch delete, name validation, and what a failed job's document says."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    BatchDeleteTrainingJobRequest,
    ChangeTrainingJobDescriptionRequest,
    DeleteTrainingJobRequest,
    ShowTrainingJobDetailsRequest,
    StopTrainingJobRequest,
    ValidateTrainingJobNameRequest,
)

from conftest import PROJECT, Server, job_body, wait_for
from helpers import (
    ONE_CORE,
    create,
    create_id,
    expect_error,
    is_uuid,
    job_names,
    now_ms,
    pid_alive,
    preview,
    run_to_end,
    sdk_client,
    search,
    show,
    show_json,
    wait_phase,
    worker_dir,
    worker_pid,
)

FLAVOR = "modelarts.local.cpu.1u"


def _stop(sdk: Any, job_id: str, action: str = "terminate") -> Any:
    return sdk.stop_training_job(StopTrainingJobRequest(training_job_id=job_id, body={"action_type": action}))


def _delete(sdk: Any, job_id: str) -> Any:
    return sdk.delete_training_job(DeleteTrainingJobRequest(training_job_id=job_id))


def _is_duplicate(sdk: Any, name: str) -> bool:
    resp = sdk.validate_training_job_name(ValidateTrainingJobNameRequest(job_name=name))
    assert resp.status_code == 200
    assert isinstance(resp.is_duplicate, bool)
    return bool(resp.is_duplicate)


def _clock_passed(ms: int) -> bool:
    return now_ms() > ms


# -- create / show -----------------------------------------------------------------------------------

def test_create_returns_the_full_document(sdk: Any) -> None:
    body = job_body("create-full", command="echo created")
    body["metadata"]["annotations"] = {"openarts-test/owner": "suite", "note": "x y z"}
    body["algorithm"]["environments"] = {"FOO": "bar", "EMPTY": ""}
    before = now_ms()
    created = create(sdk, body)
    after = now_ms()
    raw = created.to_json_object()

    meta = created.metadata
    assert is_uuid(meta.id)
    assert meta.name == "create-full"
    assert meta.description == "test job"
    assert meta.workspace_id == "0"
    assert before <= meta.create_time <= after, "create_time is in milliseconds"
    assert meta.annotations == {"openarts-test/owner": "suite", "note": "x y z"}
    assert created.kind == "job"
    assert created.status.phase in ("Creating", "Pending", "Running")
    assert created.status.tasks == ["worker-0"]

    resource = created.spec.resource
    assert resource.flavor_id == FLAVOR
    assert resource.node_count == 1
    assert resource.flavor_detail.flavor_type == "CPU"
    assert resource.flavor_detail.flavor_info.cpu.core_num == 1
    assert resource.flavor_detail.flavor_info.memory.size > 0
    assert resource.flavor_detail.flavor_info.memory.unit == "GB"

    # environments is a LIST of maps on the wire (the SDK model types it [map])
    assert raw["algorithm"]["environments"] == [{"FOO": "bar", "EMPTY": ""}]
    assert created.algorithm.environments == [{"FOO": "bar", "EMPTY": ""}]
    assert created.algorithm.command == "echo created"

    # show gives the same static document
    shown = show_json(sdk, meta.id)
    for key in ("kind", "algorithm", "spec"):
        assert shown[key] == raw[key], key
    assert shown["metadata"] == raw["metadata"]
    job = wait_phase(sdk, meta.id)
    assert job.status.phase == "Completed"


def test_show_unknown_job_is_2775(sdk: Any) -> None:
    missing = str(uuid.uuid4())
    exc = expect_error(lambda: show(sdk, missing), 400, "ModelArts.2775")
    assert missing in exc.error_msg


def test_completed_job_status(sdk: Any) -> None:
    _, job = run_to_end(sdk, job_body("completes", command="echo done"))
    st = job.status
    assert (st.phase, st.secondary_phase) == ("Completed", "Completed")
    assert st.duration > 0
    assert st.start_time >= job.metadata.create_time
    assert st.task_statuses[0].task == "worker-0"
    assert st.task_statuses[0].exit_code == 0
    assert [c for _, c in st.node_count_metrics] == [1, 0]
    rec = st.running_records[0]
    assert rec.end_reason == "job completed"
    assert rec.start_type == "init_or_rescheduled"
    assert rec.start_at <= rec.end_at < 10**11, "running records are in seconds"


def test_running_job_status(sdk: Any) -> None:
    job_id = create_id(sdk, job_body("runs", command="sleep 60", node_count=2))
    first = wait_phase(sdk, job_id, "Running")
    st = first.status
    assert st.secondary_phase == "Running"
    assert st.start_time > 0
    assert [t.task for t in st.task_statuses] == ["worker-0", "worker-1"]
    assert all(t.exit_code is None for t in st.task_statuses), "no exit code while running"
    assert [c for _, c in st.node_count_metrics] == [2]
    assert [(t.task, t.ip) for t in st.task_ips] == [("worker-0", "127.0.0.1"), ("worker-1", "127.0.0.1")]
    assert st.running_records[0].end_reason is None
    wait_for(lambda: show(sdk, job_id).status.duration > st.duration, timeout=5, message="duration to grow")


def test_jobs_are_scoped_to_their_project(sdk: Any, server: Server) -> None:
    job_id = create_id(sdk, job_body("mine", command="true"))
    other_project = "f" * 32
    assert other_project != PROJECT
    other = sdk_client(server, other_project)
    assert search(other).total == 0
    expect_error(lambda: show(other, job_id), 400, "ModelArts.2775")
    expect_error(lambda: _delete(other, job_id), 400, "ModelArts.2775")
    expect_error(lambda: _stop(other, job_id), 400, "ModelArts.2775")
    assert _is_duplicate(other, "mine") is False
    twin = create_id(other, job_body("mine", command="true"))  # names are unique per project only
    assert twin != job_id
    assert [i.metadata.id for i in search(sdk).items] == [job_id]
    assert show(sdk, job_id).metadata.name == "mine"


# -- list / search -----------------------------------------------------------------------------------

def test_list_filters_sort_and_paging(sdk: Any) -> None:
    specs = [("alpha-one", "true"), ("alpha-two", "exit 1"), ("beta-three", "sleep 60")]
    ids: dict[str, str] = {}
    times: dict[str, int] = {}
    for name, command in specs:
        created = create(sdk, job_body(name, command=command))
        ids[name], times[name] = created.metadata.id, created.metadata.create_time
        # distinct create_time values make the default order unambiguous
        wait_for(partial(_clock_passed, times[name]), timeout=2, message="clock to move on")
    assert wait_phase(sdk, ids["alpha-one"]).status.phase == "Completed"
    assert wait_phase(sdk, ids["alpha-two"]).status.phase == "Failed"
    wait_phase(sdk, ids["beta-three"], "Running")

    everything = search(sdk)
    assert (everything.total, everything.count) == (3, 3)
    assert everything.offset == 0 and everything.limit == 10
    assert (everything.sort_by, everything.order) == ("create_time", "desc")
    assert [i.metadata.name for i in everything.items] == ["beta-three", "alpha-two", "alpha-one"]
    assert everything.items[0].status.phase == "Running"
    listed_raw = everything.to_json_object()
    assert listed_raw["workspace_id"] == "0"
    assert "ai_project" not in listed_raw, "openarts has no AI projects: the field is left out, not invented"

    like = [{"key": "name", "operator": "like", "value": ["alpha"]}]
    assert sorted(job_names(sdk, filters=like)) == ["alpha-one", "alpha-two"]
    assert job_names(sdk, filters=[{"key": "name", "operator": "like", "value": ["three"]}]) == ["beta-three"]
    assert job_names(sdk, filters=[{"key": "name", "operator": "like", "value": ["%"]}]) == []

    phase_in = [{"key": "phase", "operator": "in", "value": ["Running"]}]
    assert job_names(sdk, filters=phase_in) == ["beta-three"]
    final = [{"key": "phase", "operator": "in", "value": ["Completed", "Failed"]}]
    assert sorted(job_names(sdk, filters=final)) == ["alpha-one", "alpha-two"]
    both = [*like, {"key": "phase", "operator": "in", "value": ["Failed"]}]
    assert job_names(sdk, filters=both) == ["alpha-two"]

    lo, hi = times["alpha-one"], times["alpha-two"]
    between = [{"key": "create_time", "operator": "between", "value": [str(lo), str(hi)]}]
    assert sorted(job_names(sdk, filters=between)) == ["alpha-one", "alpha-two"]
    before = [{"key": "create_time", "operator": "between", "value": ["0", str(lo - 1)]}]
    assert job_names(sdk, filters=before) == []

    assert job_names(sdk, sort_by="name", order="asc") == ["alpha-one", "alpha-two", "beta-three"]
    assert job_names(sdk, sort_by="name", order="desc") == ["beta-three", "alpha-two", "alpha-one"]
    assert job_names(sdk, sort_by="create_time", order="asc") == ["alpha-one", "alpha-two", "beta-three"]

    page1 = search(sdk, sort_by="name", order="asc", offset=0, limit=2)
    assert (page1.total, page1.count, page1.offset, page1.limit) == (3, 2, 0, 2)
    assert [i.metadata.name for i in page1.items] == ["alpha-one", "alpha-two"]
    page2 = search(sdk, sort_by="name", order="asc", offset=2, limit=2)
    assert (page2.total, page2.count) == (3, 1)
    assert [i.metadata.name for i in page2.items] == ["beta-three"]
    beyond = search(sdk, offset=10, limit=5)
    assert (beyond.total, beyond.count, beyond.items) == (3, 0, [])

    # list items are full job documents
    item = search(sdk, filters=phase_in).to_json_object()["items"][0]
    assert item["metadata"]["id"] == ids["beta-three"]
    assert item["spec"]["resource"]["flavor_id"] == FLAVOR
    assert item["status"]["phase"] == "Running"


# -- change description ------------------------------------------------------------------------------

def test_change_description(sdk: Any) -> None:
    job_id = create_id(sdk, job_body("describe-me", command="true"))
    resp = sdk.change_training_job_description(
        ChangeTrainingJobDescriptionRequest(training_job_id=job_id, body={"description": "a new description"}))
    assert resp.status_code in (200, 204)
    assert show(sdk, job_id).metadata.description == "a new description"
    described = [{"key": "name", "operator": "like", "value": ["describe"]}]
    assert search(sdk, filters=described).items[0].metadata.description == "a new description"

    expect_error(lambda: sdk.change_training_job_description(ChangeTrainingJobDescriptionRequest(
        training_job_id=job_id, body={"description": "d" * 257})), 400, "ModelArts.2788")
    assert show(sdk, job_id).metadata.description == "a new description"
    expect_error(lambda: sdk.change_training_job_description(ChangeTrainingJobDescriptionRequest(
        training_job_id=str(uuid.uuid4()), body={"description": "x"})), 400, "ModelArts.2775")


# -- stop --------------------------------------------------------------------------------------------

def test_stop_running_job(sdk: Any, server: Server) -> None:
    job_id = create_id(sdk, job_body("stop-me", command="sleep 60"))
    wait_phase(sdk, job_id, "Running")
    pid = worker_pid(server, job_id)
    assert pid_alive(pid)

    stopped = _stop(sdk, job_id)
    assert stopped.status_code == 202
    assert stopped.metadata.id == job_id
    assert stopped.status.phase in ("Running", "Terminating", "Terminated")

    job = wait_phase(sdk, job_id, "Terminated", timeout=15)
    assert job.status.secondary_phase == "Terminated"
    assert job.status.running_records[0].end_reason == "job terminated by user"
    assert [c for _, c in job.status.node_count_metrics] == [1, 0]
    wait_for(lambda: not pid_alive(pid), timeout=10, message="the sleep process to be gone")

    exc = expect_error(lambda: _stop(sdk, job_id), 409, "ModelArts.2796")
    assert job_id in exc.error_msg


def test_stop_escalates_to_sigkill_through_terminating(sdk: Any, server: Server) -> None:
    """A worker that ignores SIGTERM shows Terminating for the grace period, then is killed."""
    job_id = create_id(sdk, job_body("stubborn", command="trap '' TERM; echo ready; sleep 60"))
    wait_phase(sdk, job_id, "Running")
    pid = worker_pid(server, job_id)
    assert _stop(sdk, job_id).status_code == 202
    wait_phase(sdk, job_id, "Terminating", timeout=5)
    assert pid_alive(pid)
    # a second terminate while terminating is accepted, not an error
    assert _stop(sdk, job_id).status_code == 202
    wait_phase(sdk, job_id, "Terminated", timeout=15)
    assert not pid_alive(pid)


def test_stop_pending_job(make_server: Any) -> None:
    server = make_server(ONE_CORE)
    sdk = sdk_client(server)
    busy = create_id(sdk, job_body("hog", command="sleep 60"))
    wait_phase(sdk, busy, "Running")
    waiting = create_id(sdk, job_body("waiter", command="echo never"))
    wait_phase(sdk, waiting, "Pending")
    assert show(sdk, waiting).status.secondary_phase == "Queuing"

    assert _stop(sdk, waiting).status_code == 202
    job = wait_phase(sdk, waiting, "Terminated", timeout=10)
    assert job.status.running_records == []
    assert job.status.node_count_metrics == []
    assert job.status.duration == 0
    assert not worker_dir(server, waiting).exists(), "a job stopped while queued never started a worker"
    expect_error(lambda: _stop(sdk, waiting), 409, "ModelArts.2796")
    assert show(sdk, busy).status.phase == "Running", "stopping one job leaves the other alone"


def test_stop_final_and_unknown_jobs(sdk: Any) -> None:
    job_id, job = run_to_end(sdk, job_body("already-done", command="true"))
    assert job.status.phase == "Completed"
    expect_error(lambda: _stop(sdk, job_id), 409, "ModelArts.2796")
    assert show(sdk, job_id).status.phase == "Completed"
    expect_error(lambda: _stop(sdk, job_id, "restart"), 400, "ModelArts.2788")
    expect_error(lambda: _stop(sdk, str(uuid.uuid4())), 400, "ModelArts.2775")


# -- delete ------------------------------------------------------------------------------------------

def test_delete_final_job(sdk: Any, server: Server) -> None:
    job_id, _ = run_to_end(sdk, job_body("delete-done", command="echo bye"))
    job_dir = server.data_dir / "jobs" / job_id
    assert job_dir.is_dir()

    resp = _delete(sdk, job_id)
    assert resp.status_code == 202
    expect_error(lambda: show(sdk, job_id), 400, "ModelArts.2775")
    assert search(sdk).total == 0
    wait_for(lambda: not job_dir.exists(), timeout=10, message="the job directory to be removed")
    expect_error(lambda: _delete(sdk, job_id), 400, "ModelArts.2775")


def test_delete_running_job_kills_it(sdk: Any, server: Server) -> None:
    job_id = create_id(sdk, job_body("delete-running", command="sleep 60"))
    wait_phase(sdk, job_id, "Running")
    pid = worker_pid(server, job_id)
    assert pid_alive(pid)

    assert _delete(sdk, job_id).status_code == 202
    expect_error(lambda: show(sdk, job_id), 400, "ModelArts.2775")
    assert job_names(sdk) == []
    # the name is free at once, even while the old job's process is being stopped
    assert _is_duplicate(sdk, "delete-running") is False
    successor = create_id(sdk, job_body("delete-running", command="echo successor"))
    wait_for(lambda: not pid_alive(pid), timeout=10, message="the deleted job's process to be gone")
    assert wait_phase(sdk, successor).status.phase == "Completed"
    job_dir = server.data_dir / "jobs" / job_id
    wait_for(lambda: not job_dir.exists(), timeout=10, message="the job directory to be removed")


def test_batch_delete(sdk: Any) -> None:
    ids = [create_id(sdk, job_body(f"batch-{i}", command="true")) for i in range(3)]
    for job_id in ids:
        wait_phase(sdk, job_id)

    def batch(job_ids: list[str]) -> Any:
        return sdk.batch_delete_training_job(BatchDeleteTrainingJobRequest(
            body={"jobs": [{"kind": "job", "metadata": {"id": j}} for j in job_ids]}))

    # one unknown id: the whole batch is refused and nothing is deleted
    expect_error(lambda: batch([ids[0], str(uuid.uuid4())]), 400, "ModelArts.2775")
    assert search(sdk).total == 3

    assert batch(ids[:2]).status_code == 202
    assert job_names(sdk) == ["batch-2"]
    for job_id in ids[:2]:
        expect_error(partial(show, sdk, job_id), 400, "ModelArts.2775")
    assert show(sdk, ids[2]).status.phase == "Completed"
    expect_error(lambda: sdk.batch_delete_training_job(BatchDeleteTrainingJobRequest(body={"jobs": []})),
                 400, "ModelArts.2788")


# -- names -------------------------------------------------------------------------------------------

def test_validate_training_job_name(sdk: Any) -> None:
    assert _is_duplicate(sdk, "name-check") is False
    job_id, _ = run_to_end(sdk, job_body("name-check", command="true"))
    assert _is_duplicate(sdk, "name-check") is True
    assert _is_duplicate(sdk, "name-chec") is False
    _delete(sdk, job_id)
    assert _is_duplicate(sdk, "name-check") is False


def test_duplicate_name_is_2751(sdk: Any) -> None:
    first = create_id(sdk, job_body("twin", command="true"))
    exc = expect_error(lambda: create(sdk, job_body("twin", command="true")), 400, "ModelArts.2751")
    assert "twin" in exc.error_msg
    listed = search(sdk)
    assert listed.total == 1
    assert listed.items[0].metadata.id == first


def test_concurrent_creates_of_one_name(sdk: Any, server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clients = [sdk_client(server) for _ in range(6)]

    def attempt(client: Any) -> int:
        try:
            return int(create(client, job_body("race", command="true")).status_code)
        except ClientRequestException as exc:
            assert exc.error_code == "ModelArts.2751", exc.error_msg
            return int(exc.status_code)

    with ThreadPoolExecutor(len(clients)) as pool:
        statuses = sorted(pool.map(attempt, clients))
    assert statuses == [201] + [400] * (len(clients) - 1)
    assert search(sdk).total == 1


def test_name_is_free_again_after_delete(sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("reborn", command="true"))
    _delete(sdk, job_id)
    again = create_id(sdk, job_body("reborn", command="true"))
    assert again != job_id
    assert wait_phase(sdk, again).status.phase == "Completed"


# -- failing jobs -----------------------------------------------------------------------------------

def test_failing_job_document(sdk: Any) -> None:
    job_id, job = run_to_end(sdk, job_body("fails", command="echo first line; echo boom; exit 3"))
    st = job.status
    assert (st.phase, st.secondary_phase) == ("Failed", "Failed")
    assert st.duration > 0
    [task] = st.task_statuses
    assert task.task == "worker-0"
    assert task.exit_code == 3
    assert "boom" in task.message
    assert task.message.rstrip().endswith("boom"), "the message ends with the last log line"

    [rec] = st.running_records
    assert rec.end_reason == "exit with 3"
    assert rec.end_related_task == "worker-0"
    assert rec.start_at <= rec.end_at

    pairs = st.node_count_metrics
    assert [c for _, c in pairs] == [1, 0]
    assert all(t > 10**12 for t, _ in pairs), "node_count_metrics times are in milliseconds"
    assert pairs[0][0] <= pairs[1][0]
    assert st.start_time <= pairs[0][0]

    raw = sdk.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=job_id)).to_json_object()
    assert raw["status"]["task_statuses"][0]["exit_code"] == 3


def test_one_failing_worker_fails_the_job(sdk: Any, server: Server) -> None:
    command = 'if [ "$VC_TASK_INDEX" = 1 ]; then echo dying; exit 5; fi; echo waiting; sleep 60'
    job_id = create_id(sdk, job_body("one-fails", command=command, node_count=2))
    job = wait_phase(sdk, job_id, timeout=15)
    st = job.status
    assert st.phase == "Failed"
    [rec] = st.running_records
    assert (rec.end_reason, rec.end_related_task) == ("exit with 5", "worker-1")
    codes = {t.task: t.exit_code for t in st.task_statuses}
    assert codes["worker-1"] == 5
    assert codes["worker-0"] not in (None, 0), "the surviving worker was stopped"
    assert "dying" in next(t.message for t in st.task_statuses if t.task == "worker-1")
    assert [c for _, c in st.node_count_metrics] == [2, 0]
    assert not pid_alive(worker_pid(server, job_id, "worker-0"))


def test_typed_sdk_models(sdk: Any, server: Server) -> None:
    """The SDK's own request models (not dicts) serialise into requests the server accepts."""
    from huaweicloudsdkmodelarts import v1

    data = server.data_dir / "obs" / "bkt" / "in" / "x.txt"
    data.parent.mkdir(parents=True)
    data.write_text("typed\n")
    job = v1.Job(
        kind="job",
        metadata=v1.JobMetadata(name="typed-models", description="built from models", annotations={"k": "v"}),
        algorithm=v1.JobAlgorithm(
            command='cat "$(echo "$2" | cut -d= -f2)/x.txt"; printf "%s|" "$GREETING"',
            parameters=[v1.Parameters(name="epochs", value="3")],
            inputs=[v1.Input(name="data_url", remote=v1.InputDataInfo(obs=v1.InputDataInfoObs(obs_url="obs://bkt/in/")))],
            outputs=[v1.Output(name="train_url", remote=v1.Remote(obs=v1.RemoteObs(obs_url="obs://bkt/out/")))],
            engine=v1.JobEngine(engine_id="local-python3"),
            environments={"GREETING": "hi"},
        ),
        spec=v1.Spec(resource=v1.SpecResource(flavor_id=FLAVOR, node_count=1)),
    )
    created = sdk.create_training_job(v1.CreateTrainingJobRequest(body=job))
    assert created.status_code == 201
    job_id = created.metadata.id
    assert created.metadata.annotations == {"k": "v"}
    done = wait_phase(sdk, job_id)
    assert done.status.phase == "Completed"
    log = preview(sdk, job_id).content
    assert log.startswith("typed\nhi|--epochs=3|--data_url=/"), log
    assert "|--train_url=/" in log

    update = v1.JobUpdateRequestBody(description="updated from a model")
    sdk.change_training_job_description(v1.ChangeTrainingJobDescriptionRequest(training_job_id=job_id, body=update))
    searches = v1.JobSearches(limit=5, offset=0, sort_by="create_time", order="asc",
                              filters=[v1.Filter(key="name", operator="like", value=["typed"])])
    listed = sdk.list_training_jobs(v1.ListTrainingJobsRequest(body=searches))
    assert [(i.metadata.name, i.metadata.description) for i in listed.items] == [
        ("typed-models", "updated from a model")]
    expect_error(lambda: sdk.stop_training_job(v1.StopTrainingJobRequest(
        training_job_id=job_id, body=v1.JobActionType(action_type="terminate"))), 409, "ModelArts.2796")
    item = v1.BatchDeleteJobItem(kind="job", metadata=v1.BatchDeleteJobMetadata(id=job_id))
    batch = v1.BatchDeleteJobsReq(jobs=[item])
    assert sdk.batch_delete_training_job(v1.BatchDeleteTrainingJobRequest(body=batch)).status_code == 202
    assert search(sdk).total == 0
