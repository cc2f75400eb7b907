"""The shortest end-to-end path: the SDK creates a job that really runs and completes."""

from __future__ import annotations

from typing import Any

from conftest import job_body, wait_for


def test_sdk_create_show_complete(sdk: Any) -> None:
    from huaweicloudsdkmodelarts.v1 import CreateTrainingJobRequest, ShowTrainingJobDetailsRequest

    body = job_body("smoke", command="echo hello from $MA_TASK_NAME $VC_TASK_INDEX")
    created = sdk.create_training_job(CreateTrainingJobRequest(body=body))
    assert created.status_code == 201
    job_id = created.metadata.id

    def done() -> Any:
        r = sdk.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=job_id))
        return r if r.status.phase in ("Completed", "Failed") else None

    job = wait_for(done, timeout=30, message="job completion")
    assert job.status.phase == "Completed"
    assert job.status.task_statuses[0].exit_code == 0
    assert job.status.running_records[0].end_reason == "job completed"
