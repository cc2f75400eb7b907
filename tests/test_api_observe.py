"""Observing jobs through the official SDK: tasks, logs (preview and paged), events, metrics, flavors,
engines; unknown tasks and path traversal through task ids."""

from __future__ import annotations

import sys
import uuid
from functools import partial
from typing import Any

import httpx
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    ListTrainingJobEventsRequest,
    ListTrainingJobTasksRequest,
    ShowTrainingJobEnginesRequest,
    ShowTrainingJobFlavorsRequest,
    ShowTrainingJobLogsFromAomRequest,
    ShowTrainingJobLogsPreviewRequest,
    ShowTrainingJobMetricsRequest,
)

from conftest import Server, job_body, wait_for
from helpers import ONE_CORE, create_id, expect_error, preview, run_to_end, sdk_client, wait_phase

TEN_LINES = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i; done"


def _tasks(sdk: Any, job_id: str, schedule_count: int | None = None) -> Any:
    resp = sdk.list_training_job_tasks(ListTrainingJobTasksRequest(training_job_id=job_id,
                                                                   schedule_count=schedule_count))
    assert resp.status_code == 200
    return resp


def _aom(sdk: Any, job_id: str, task: str = "worker-0", **query: Any) -> Any:
    resp = sdk.show_training_job_logs_from_aom(ShowTrainingJobLogsFromAomRequest(
        training_job_id=job_id, task_id=task, **query))
    assert resp.status_code == 200
    return resp


def _events(sdk: Any, job_id: str, **query: Any) -> Any:
    resp = sdk.list_training_job_events(ListTrainingJobEventsRequest(training_job_id=job_id, **query))
    assert resp.status_code == 200
    return resp


def _metrics(sdk: Any, job_id: str, task: str = "worker-0") -> dict[str, list[float]]:
    resp = sdk.show_training_job_metrics(ShowTrainingJobMetricsRequest(training_job_id=job_id, task_id=task))
    assert resp.status_code == 200
    return {m.metric: list(m.value) for m in resp.metrics}


# -- tasks -------------------------------------------------------------------------------------------

def test_list_training_job_tasks(sdk: Any) -> None:
    job_id, job = run_to_end(sdk, job_body("two-tasks", command="echo hi", node_count=2))
    assert job.status.phase == "Completed"
    resp = _tasks(sdk, job_id)
    raw = resp.to_json_object()
    assert isinstance(raw, list), "the body is a bare JSON array"
    assert raw == [
        {"task": "worker-0", "ip": "127.0.0.1", "schedule_count": 1},  # no host_ip: none is known
        {"task": "worker-1", "ip": "127.0.0.1", "schedule_count": 1},
    ]
    assert [(t.task, t.schedule_count) for t in resp.body] == [("worker-0", 1), ("worker-1", 1)]
    assert [t.task for t in _tasks(sdk, job_id, schedule_count=1).body] == ["worker-0", "worker-1"]
    assert _tasks(sdk, job_id, schedule_count=2).to_json_object() == []
    expect_error(lambda: _tasks(sdk, str(uuid.uuid4())), 400, "ModelArts.2775")


# -- logs --------------------------------------------------------------------------------------------

def test_logs_preview(sdk: Any, server: Server) -> None:
    job_id, job = run_to_end(sdk, job_body("preview", command="echo one; echo two >&2; echo three"))
    assert job.status.phase == "Completed"
    resp = preview(sdk, job_id)
    assert resp.content.splitlines() == ["one", "two", "three"], "stdout and stderr, in order"
    log_file = server.data_dir / "jobs" / job_id / "attempts" / "1" / "worker-0" / "log"
    assert resp.full_size == log_file.stat().st_size
    assert resp.current_size == len(resp.content.encode()) == resp.full_size


def test_logs_preview_is_the_latest_5mb(sdk: Any) -> None:
    """Preview returns at most 5 MB, the latest part, starting at a line boundary."""
    script = "import sys\nfor i in range(120000): sys.stdout.write(f'line {i:07d} ' + 'x' * 40 + chr(10))"
    job_id, job = run_to_end(sdk, job_body("big-log", command=f"{sys.executable} -c \"{script}\""))
    assert job.status.phase == "Completed"
    resp = preview(sdk, job_id)
    line_len = len("line 0000000 " + "x" * 40 + "\n")
    assert resp.full_size == 120000 * line_len
    assert resp.current_size == len(resp.content.encode()) <= 5 * 1024 * 1024
    assert resp.current_size > 5 * 1024 * 1024 - line_len
    lines = resp.content.splitlines()
    assert lines[-1] == "line 0119999 " + "x" * 40
    assert lines[0].startswith("line ") and len(lines[0]) == line_len - 1, "starts at a line boundary"
    assert len(lines) * line_len == resp.current_size
    tail = _aom(sdk, job_id, lines=2)
    assert tail.content.splitlines() == ["line 0119998 " + "x" * 40, "line 0119999 " + "x" * 40]
    assert (tail.start_line, tail.end_line) == ("119999", "120000")


def test_logs_and_metrics_of_a_queued_job_are_not_ready(make_server: Any) -> None:
    server = make_server(ONE_CORE)
    sdk = sdk_client(server)
    hog = create_id(sdk, job_body("hog", command="sleep 60"))
    wait_phase(sdk, hog, "Running")
    queued = create_id(sdk, job_body("queued", command="echo later"))
    wait_phase(sdk, queued, "Pending")
    # 204 ModelArts.2776 NotReadyToFetchLog and 2777 NotReadyToFetchMetric, as the reference's error table
    # lists them: HTTP lets a 204 carry no body, so the SDK returns an empty response with status 204
    not_ready = [
        sdk.show_training_job_logs_preview(ShowTrainingJobLogsPreviewRequest(training_job_id=queued,
                                                                             task_id="worker-0")),
        sdk.show_training_job_logs_from_aom(ShowTrainingJobLogsFromAomRequest(training_job_id=queued,
                                                                              task_id="worker-0")),
        sdk.show_training_job_metrics(ShowTrainingJobMetricsRequest(training_job_id=queued, task_id="worker-0")),
    ]
    assert [(r.status_code, r.raw_content) for r in not_ready] == [(204, b"")] * 3
    assert _tasks(sdk, queued).to_json_object() == []
    assert _metrics(sdk, hog)["cpuUsage"], "a running job has metrics"


def test_logs_preview_of_two_tasks(sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("preview-2", command="echo I am $VC_TASK_INDEX", node_count=2))
    assert preview(sdk, job_id, "worker-0").content == "I am 0\n"
    assert preview(sdk, job_id, "worker-1").content == "I am 1\n"


def test_logs_from_aom_paging(sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("aom", command=TEN_LINES))
    all_lines = [f"line-{i}" for i in range(1, 11)]

    whole = _aom(sdk, job_id)
    assert whole.content.splitlines() == all_lines
    assert (whole.start_line, whole.end_line, whole.lines) == ("1", "10", 10)

    tail = _aom(sdk, job_id, lines=3)  # default order: the latest lines
    assert tail.content.splitlines() == ["line-8", "line-9", "line-10"]
    assert (tail.start_line, tail.end_line, tail.lines) == ("8", "10", 3)

    head = _aom(sdk, job_id, lines=3, order="asc")
    assert head.content.splitlines() == ["line-1", "line-2", "line-3"]

    forward = _aom(sdk, job_id, base_line="5", lines=3, order="asc")
    assert forward.content.splitlines() == ["line-5", "line-6", "line-7"]
    assert (forward.start_line, forward.end_line, forward.lines) == ("5", "7", 3)

    backward = _aom(sdk, job_id, base_line="5", lines=3, order="desc")
    assert backward.content.splitlines() == ["line-3", "line-4", "line-5"]
    assert (backward.start_line, backward.end_line) == ("3", "5")

    # walking forward page by page reads every line exactly once
    seen: list[str] = []
    base = 1
    while True:
        page = _aom(sdk, job_id, base_line=str(base), lines=4, order="asc")
        if page.lines == 0:
            break
        seen += page.content.splitlines()
        base = int(page.end_line) + 1
        assert len(seen) <= 10
    assert seen == all_lines

    past_end = _aom(sdk, job_id, base_line="11", lines=5, order="asc")
    assert (past_end.lines, past_end.content) == (0, "")
    expect_error(lambda: _aom(sdk, job_id, lines=0), 400, "ModelArts.2764")
    expect_error(lambda: _aom(sdk, job_id, order="sideways"), 400, "ModelArts.2764")
    expect_error(lambda: _aom(sdk, job_id, base_line="five"), 400, "ModelArts.2764")


# -- events ------------------------------------------------------------------------------------------

def test_events_of_a_completed_job(sdk: Any) -> None:
    job_id, job = run_to_end(sdk, job_body("eventful", command="echo hi"))
    assert job.status.phase == "Completed"
    resp = _events(sdk, job_id)
    messages = [e.message for e in resp.events]
    assert resp.total == len(messages)

    def index(fragment: str) -> int:
        hits = [i for i, m in enumerate(messages) if fragment.lower() in m.lower()]
        assert hits, f"no event mentions {fragment!r}: {messages}"
        return hits[0]

    created, queued = index("created"), index("queued")
    started, exited, done = index("worker-0 started"), index("exited with code 0"), index("job completed")
    assert created < queued < started < exited < done, messages
    assert all(e.level in ("Info", "Warning", "Error") for e in resp.events)
    times = [int(e.time) for e in resp.events]
    assert times == sorted(times) and all(t > 10**12 for t in times), "ms timestamps, oldest first"
    assert all(e.source for e in resp.events)

    newest_first = _events(sdk, job_id, order="desc")
    assert [e.message for e in newest_first.events] == messages[::-1]
    page = _events(sdk, job_id, offset=1, limit=2)
    assert (page.total, page.offset, page.limit) == (len(messages), 1, 2)
    assert [e.message for e in page.events] == messages[1:3]
    first, last = int(resp.events[0].time), int(resp.events[-1].time)
    assert _events(sdk, job_id, end_time=str(first - 1)).total == 0
    assert _events(sdk, job_id, start_time=str(first), end_time=str(last)).total == len(messages)
    assert _events(sdk, job_id, start_time=str(last + 1)).total == 0
    found = _events(sdk, job_id, pattern="worker-0")
    assert found.total >= 2 and all("worker-0" in e.message for e in found.events)
    expect_error(lambda: _events(sdk, str(uuid.uuid4())), 400, "ModelArts.2775")


def test_events_of_a_failed_job(sdk: Any) -> None:
    job_id, job = run_to_end(sdk, job_body("eventful-fail", command="exit 3"))
    assert job.status.phase == "Failed"
    events = _events(sdk, job_id).events
    assert any("exited with code 3" in e.message for e in events)
    failed = [e for e in events if "failed" in e.message.lower()]
    assert failed and failed[-1].level == "Error"
    errors = _events(sdk, job_id, level="Error").events
    assert errors and all(e.level == "Error" for e in errors)


# -- metrics -----------------------------------------------------------------------------------------

def test_metrics_of_a_busy_job(sdk: Any) -> None:
    burn = f"{sys.executable} -c 'import time\nt = time.time()\nwhile time.time() - t < 3: pass'"
    job_id = create_id(sdk, job_body("burner", command=burn))
    wait_phase(sdk, job_id, ("Running", "Completed", "Failed"))

    def busy() -> dict[str, list[float]] | None:
        m = _metrics(sdk, job_id)
        return m if any(v > 0 for v in m["cpuUsage"]) else None

    metrics = wait_for(busy, timeout=10, message="a cpuUsage sample above 0")
    assert set(metrics) >= {"cpuUsage", "memUsage"}
    assert len(metrics["cpuUsage"]) == len(metrics["memUsage"]) >= 1
    assert any(v > 0 for v in metrics["memUsage"])
    assert all(v == -1 or 0 <= v <= 200 for v in metrics["cpuUsage"]), metrics
    assert wait_phase(sdk, job_id).status.phase == "Completed"
    after = _metrics(sdk, job_id)
    assert any(v > 0 for v in after["cpuUsage"]), "samples survive the job's end"
    expect_error(lambda: _metrics(sdk, job_id, "worker-1"), 400, "ModelArts.2775")


# -- catalog -----------------------------------------------------------------------------------------

def test_flavors(sdk: Any) -> None:
    resp = sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest())
    assert resp.status_code == 200
    assert resp.total_count == len(resp.flavors) >= 1
    by_id = {f.flavor_id: f for f in resp.flavors}
    one = by_id["modelarts.local.cpu.1u"]
    assert one.flavor_type == "CPU"
    assert one.max_num >= 2, "the test config's node holds many 1-core workers"
    assert one.flavor_info.cpu.core_num == 1
    assert one.flavor_info.memory.size > 0

    cpu = sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest(flavor_type="CPU"))
    assert cpu.total_count == len(cpu.flavors) >= 1
    assert {f.flavor_type for f in cpu.flavors} == {"CPU"}
    gpu = sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest(flavor_type="GPU"))
    assert all(f.flavor_type == "GPU" for f in gpu.flavors)
    assert cpu.total_count + gpu.total_count == resp.total_count
    expect_error(lambda: sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest(flavor_type="TPU")),
                 400, "ModelArts.2764")


def test_engines(sdk: Any) -> None:
    resp = sdk.show_training_job_engines(ShowTrainingJobEnginesRequest())
    assert resp.status_code == 200
    assert resp.total == len(resp.items) >= 1
    engine = next(e for e in resp.items if e.engine_id == "local-python3")
    assert engine.engine_name == "Python"
    assert engine.engine_version.startswith("python3")
    # a listed engine can be used, by id or by name + version
    by_id = job_body("by-engine-id", command="true", engine={"engine_id": engine.engine_id})
    assert run_to_end(sdk, by_id)[1].status.phase == "Completed"
    by_name = job_body("by-engine-name", command="true",
                       engine={"engine_name": engine.engine_name, "engine_version": engine.engine_version})
    assert run_to_end(sdk, by_name)[1].status.phase == "Completed"


# -- unknown tasks, traversal ------------------------------------------------------------------------

def test_unknown_task_is_2775(sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("one-task", command="echo hi"))
    for task in ("worker-1", "worker-x", "chief-0", "worker-01", "Worker-0", "worker--1"):
        expect_error(partial(preview, sdk, job_id, task), 400, "ModelArts.2775")
        expect_error(partial(_aom, sdk, job_id, task), 400, "ModelArts.2775")
        expect_error(partial(_metrics, sdk, job_id, task), 400, "ModelArts.2775")
    expect_error(lambda: preview(sdk, str(uuid.uuid4())), 400, "ModelArts.2775")


def test_non_canonical_task_ids_are_unknown(sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("canonical", command="echo hi"))
    for task in ("worker-00", "worker-000000", "worker-0\n"):
        expect_error(partial(preview, sdk, job_id, task), 400, "ModelArts.2775")
        expect_error(partial(_aom, sdk, job_id, task), 400, "ModelArts.2775")
        expect_error(partial(_metrics, sdk, job_id, task), 400, "ModelArts.2775")


SENTINEL = "SENTINEL-do-not-serve-8c41"
TRAVERSALS = ["..", "worker-0/../../x", "..%2F..%2Fetc", "../../../../../../etc/passwd", "worker-0%2F..%2Fx",
              "%2e%2e", "worker-0/..", "/etc/passwd", "worker-0\x00"]


def _plant_sentinels(server: Server, job_id: str) -> None:
    """Files where a task id that escapes attempts/1/<task>/ would land."""
    job_dir = server.data_dir / "jobs" / job_id
    for rel in ("attempts/1/log", "attempts/1/x/log", "attempts/x/log", "attempts/log", "etc/log", "log",
                "attempts/1/..%2F..%2Fetc/log", "attempts/1/%2e%2e/log"):
        path = job_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{SENTINEL} root:x:0:0\n")
    (server.data_dir / "jobs" / "log").write_text(f"{SENTINEL}\n")
    (server.data_dir / "log").write_text(f"{SENTINEL}\n")


def _no_leak(text: str) -> None:
    assert SENTINEL not in text
    assert "root:x:0:0" not in text
    assert "Traceback" not in text


def _sdk_text(call: Any) -> str:
    """What one SDK call brought back: never a 200, never file content."""
    try:
        resp = call()
    except ClientRequestException as exc:
        assert 400 <= exc.status_code < 500, (exc.status_code, exc.error_msg)
        _no_leak(exc.error_msg)
        return str(exc.error_msg)
    # the SDK normalises a plain '..' segment away before sending; whatever route that reaches,
    # it must not be a log or a metric
    assert resp.status_code != 200, resp.raw_content
    text = (resp.raw_content or b"").decode()
    _no_leak(text)
    return text


def test_task_id_traversal_via_sdk(sdk: Any, server: Server) -> None:
    job_id, _ = run_to_end(sdk, job_body("traversal", command="echo ok"))
    _plant_sentinels(server, job_id)
    for task_id in TRAVERSALS:
        _sdk_text(partial(sdk.show_training_job_logs_preview,
                          ShowTrainingJobLogsPreviewRequest(training_job_id=job_id, task_id=task_id)))
        _sdk_text(partial(sdk.show_training_job_logs_from_aom,
                          ShowTrainingJobLogsFromAomRequest(training_job_id=job_id, task_id=task_id)))
        _sdk_text(partial(sdk.show_training_job_metrics,
                          ShowTrainingJobMetricsRequest(training_job_id=job_id, task_id=task_id)))
    # ids that reach the server whole are refused as unknown tasks
    for task_id in ("..%2F..%2Fetc", "worker-0%2F..%2Fx", "%2e%2e", "worker-0\x00", "worker-0 "):
        expect_error(partial(preview, sdk, job_id, task_id), 400, "ModelArts.2775")
    assert preview(sdk, job_id).content == "ok\n", "the real log is still served"


def test_task_id_traversal_raw(server: Server, sdk: Any, http: httpx.Client) -> None:
    job_id, _ = run_to_end(sdk, job_body("traversal-raw", command="echo ok"))
    _plant_sentinels(server, job_id)
    raw_ids = ["..%2F..%2Fetc", "..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "worker-0%2F..%2F..%2Fx", "%2e%2e",
               "worker-0%2F%2e%2e", "%2E%2E%2F%2E%2E%2Flog", "..%5C..%5Cetc", "worker-0%00", "%252e%252e",
               "..%252F..%252Fetc"]
    for task_id in raw_ids:
        for tail in (f"tasks/{task_id}/logs/preview", f"logs/{task_id}", f"metrics/{task_id}"):
            url = f"{server.api}/training-jobs/{job_id}/{tail}"
            r = http.get(httpx.URL(url))
            assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert r.headers["x-request-id"]
            assert r.json()["error_code"]
            _no_leak(r.text)
    # a job id that tries to climb out of the jobs directory
    for job_part in ("..%2F..", "%2e%2e%2Fjobs", "..%2F" + job_id):
        r = http.get(httpx.URL(f"{server.api}/training-jobs/{job_part}/tasks/worker-0/logs/preview"))
        assert 400 <= r.status_code < 500
        _no_leak(r.text)


def test_log_file_of_other_job_is_not_reachable(sdk: Any, server: Server) -> None:
    """The job id is part of the path too: a task of one job never serves another job's log."""
    secret_id, _ = run_to_end(sdk, job_body("secret-job", command=f"echo {SENTINEL}"))
    job_id, _ = run_to_end(sdk, job_body("other-job", command="echo ok"))
    assert SENTINEL in preview(sdk, secret_id).content
    for task_id in (f"../../../{secret_id}/attempts/1/worker-0",
                    f"..%2F..%2F..%2F{secret_id}%2Fattempts%2F1%2Fworker-0"):
        _sdk_text(partial(preview, sdk, job_id, task_id))
    assert preview(sdk, job_id).content == "ok\n"
