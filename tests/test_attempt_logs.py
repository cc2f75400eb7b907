"""Every attempt's log stays readable: a job that fails and is recovered keeps its first attempt's log,
read through the `attempt` query parameter of the two log operations (an openarts extension) and
`openarts logs --attempt N`; without the parameter both read the latest attempt, as ModelArts does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from huaweicloudsdkmodelarts.v1 import ShowTrainingJobLogsFromAomRequest, ShowTrainingJobLogsPreviewRequest

from conftest import Server, job_body, wait_for
from test_cli import assert_clean_failure, cli


def recovered_job(server: Server, marker: Path) -> str:
    """A job whose first attempt fails (exit 1) and whose second, after the automatic restart, completes."""
    flag = f'"$MA_HOME/.{marker.name}"'  # the job's home outlives an attempt; a sandboxed worker writes there
    command = (f'if [ ! -e {flag} ]; then touch {flag}; echo "attempt one: failing on purpose"; exit 1; fi; '
               'echo "attempt two: fine"')
    body = job_body("two-attempts", command=command)
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "2",
                                       "fault-tolerance/job-unconditional-retry": "true"}
    r = httpx.post(f"{server.api}/training-jobs", json=body, timeout=10)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["metadata"]["id"]

    def final() -> dict[str, Any] | None:
        doc: dict[str, Any] = httpx.get(f"{server.api}/training-jobs/{job_id}", timeout=10).json()
        return doc if doc["status"]["phase"] in ("Completed", "Failed", "Terminated", "Abnormal") else None

    doc = wait_for(final, timeout=60, message="the job to end")
    assert doc["status"]["phase"] == "Completed"
    assert [r["end_reason"] for r in doc["status"]["running_records"]] == ["exit with 1", "job completed"]
    return job_id


def test_first_attempt_log_stays_readable(server: Server, sdk: Any, tmp_path: Path) -> None:
    job_id = recovered_job(server, tmp_path / "marker")
    lines = f"{server.api}/training-jobs/{job_id}/logs/worker-0"
    preview = f"{server.api}/training-jobs/{job_id}/tasks/worker-0/logs/preview"

    first = httpx.get(lines, params={"attempt": 1}, timeout=10)
    assert first.status_code == 200, first.text
    assert first.json()["content"] == "attempt one: failing on purpose\n"
    assert httpx.get(lines, params={"attempt": 2}, timeout=10).json()["content"] == "attempt two: fine\n"
    assert httpx.get(preview, params={"attempt": 1}, timeout=10).json()["content"] == \
        "attempt one: failing on purpose\n"

    # without it, as ModelArts: the latest attempt (through the official SDK, which has no such parameter)
    aom = sdk.show_training_job_logs_from_aom(ShowTrainingJobLogsFromAomRequest(training_job_id=job_id,
                                                                                task_id="worker-0"))
    assert aom.content == "attempt two: fine\n"
    pre = sdk.show_training_job_logs_preview(ShowTrainingJobLogsPreviewRequest(training_job_id=job_id,
                                                                               task_id="worker-0"))
    assert pre.content == "attempt two: fine\n"
    assert httpx.get(lines, params={"attempt": ""}, timeout=10).json()["content"] == "attempt two: fine\n"

    out = cli(server, "logs", job_id, "--attempt", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "attempt one: failing on purpose\n"
    assert cli(server, "logs", job_id).stdout == "attempt two: fine\n"

    # an attempt the job does not have, or not a number: a clear ModelArts error, never a 5xx
    for url in (f"{server.api}/training-jobs/{job_id}/logs/worker-0",
                f"{server.api}/training-jobs/{job_id}/tasks/worker-0/logs/preview"):
        r = httpx.get(url, params={"attempt": 3}, timeout=10)
        assert r.status_code == 400
        assert r.json() == {"error_code": "ModelArts.2764",
                            "error_msg": f"Training job (ID: {job_id}) has no attempt 3: it has attempts 1 to 2."}
        for bad in ("0", "-1", "abc", "1.5", " 1", "1_0", "9" * 30, "99999999999999999999999"):
            r = httpx.get(url, params={"attempt": bad}, timeout=10)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error_code"] == "ModelArts.2764"
            assert "attempt must be a whole number" in r.json()["error_msg"]
    assert_clean_failure(cli(server, "logs", job_id, "--attempt", "3"), "has no attempt 3", "ModelArts.2764")
    usage = cli(server, "logs", job_id, "--attempt", "0")
    assert usage.returncode == 2 and "not a positive integer" in usage.stderr
