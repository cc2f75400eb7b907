"""Small helpers shared by the API tests (tests/test_api_*.py): SDK calls that the tests repeat,
waiting on job phases, checking ModelArts errors, and looking at a job's worker files."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    CreateTrainingJobRequest,
    ListTrainingJobsRequest,
    ShowTrainingJobDetailsRequest,
    ShowTrainingJobLogsPreviewRequest,
)

import sdk_types
from conftest import DEFAULT_CONFIG, PROJECT, Server, wait_for

FINAL_PHASES = ("Completed", "Failed", "Terminated", "Abnormal")

# One node with a single core: a second 1-core job has to wait.
ONE_CORE = DEFAULT_CONFIG.replace("cpu_cores = 64", "cpu_cores = 1")


# A worker that leaves a daemonized grandchild (double fork and setsid) running `sleep {token}`
DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{token}"])
    os._exit(0)
print("daemon started", flush=True)
time.sleep(600)
"""


def sdk_client(server: Server, project_id: str = PROJECT) -> Any:
    """An official SDK client (AK/SK) for `server`, acting in `project_id`."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient

    creds = BasicCredentials("TESTAK0000000000", "TESTSK0000000000000000000000000000000000", project_id)
    return ModelArtsClient.new_builder().with_credentials(creds).with_endpoint(server.url).build()


def now_ms() -> int:
    return int(time.time() * 1000)


def is_uuid(value: Any) -> bool:
    try:
        return str(uuid.UUID(str(value))) == value
    except ValueError:
        return False


def create(sdk: Any, body: dict[str, Any]) -> Any:
    """Create a job through the SDK; the response must be 201 with a job id."""
    resp = sdk.create_training_job(CreateTrainingJobRequest(body=body))
    assert resp.status_code == 201
    assert resp.metadata.id
    return resp


def create_id(sdk: Any, body: dict[str, Any]) -> str:
    return str(create(sdk, body).metadata.id)


def show(sdk: Any, job_id: str) -> Any:
    resp = sdk.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=job_id))
    assert resp.status_code == 200
    return resp


def show_json(sdk: Any, job_id: str) -> dict[str, Any]:
    """The job document exactly as the server sent it (the SDK model drops unknown fields); every value
    must have the type the SDK's response model declares, whatever state the test put the job in."""
    raw = show(sdk, job_id).to_json_object()
    assert isinstance(raw, dict)
    mismatches, _unknown = sdk_types.check("ShowTrainingJobDetailsResponse", raw)
    assert not mismatches, mismatches
    return raw


def wait_phase(sdk: Any, job_id: str, phases: str | Iterable[str] = FINAL_PHASES, timeout: float = 30.0) -> Any:
    """Poll the job until its phase is one of `phases`; returns the SDK response."""
    wanted = (phases,) if isinstance(phases, str) else tuple(phases)

    def reached() -> Any:
        job = show(sdk, job_id)
        return job if job.status.phase in wanted else None

    return wait_for(reached, timeout=timeout, message=f"job {job_id} phase in {wanted}")


def run_to_end(sdk: Any, body: dict[str, Any], timeout: float = 30.0) -> tuple[str, Any]:
    job_id = create_id(sdk, body)
    return job_id, wait_phase(sdk, job_id, timeout=timeout)


def expect_error(call: Callable[[], Any], status: int, code: str) -> ClientRequestException:
    """`call` must fail with a ModelArts error body of this HTTP status and error_code."""
    with pytest.raises(ClientRequestException) as info:
        call()
    exc = info.value
    assert (exc.status_code, exc.error_code) == (status, code), f"{exc.status_code} {exc.error_code}: {exc.error_msg}"
    assert exc.error_msg, "the error body carries a message"
    assert "Traceback" not in exc.error_msg
    assert exc.request_id, "every response carries X-Request-Id"
    return exc


def search(sdk: Any, **body: Any) -> Any:
    resp = sdk.list_training_jobs(ListTrainingJobsRequest(body=body))
    assert resp.status_code == 200
    return resp


def job_names(sdk: Any, **body: Any) -> list[str]:
    """Names of the listed jobs, in the order the server returned them."""
    body.setdefault("limit", 50)
    return [item.metadata.name for item in search(sdk, **body).items]


def preview(sdk: Any, job_id: str, task: str = "worker-0") -> Any:
    resp = sdk.show_training_job_logs_preview(ShowTrainingJobLogsPreviewRequest(training_job_id=job_id, task_id=task))
    assert resp.status_code == 200
    return resp


def worker_dir(server: Server, job_id: str, task: str = "worker-0", attempt: int = 1) -> Path:
    return server.data_dir / "jobs" / job_id / "attempts" / str(attempt) / task


def worker_pid(server: Server, job_id: str, task: str = "worker-0", attempt: int = 1) -> int:
    """The worker's pid (its process group id) as the executor recorded it."""
    pid_file = worker_dir(server, job_id, task, attempt) / "worker.pid"

    def read() -> int | None:
        try:
            text = pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    return int(wait_for(read, timeout=15, message=f"{pid_file}"))


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds (a test's helper servers)."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

