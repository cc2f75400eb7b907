"""Project isolation and path parameters: another project's job looks exactly like a job that does not
exist, for every read and every action; no path parameter reaches a file outside the job's logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, wait_for
from security_support import (
    MISSING_JOB,
    PROJECT_B,
    Key,
    create_key,
    raw_request,
    sdk_for_key,
    signed_client,
    signed_headers,
)


@pytest.fixture
def two_tenants(make_server: Callable[..., Server], tmp_path: Path) -> tuple[Server, Key, Key]:
    data_dir = tmp_path / "tenants"
    data_dir.mkdir()
    alice, bob = create_key(data_dir, PROJECT, "alice"), create_key(data_dir, PROJECT_B, "bob")
    return make_server(DEFAULT_CONFIG, data_dir=data_dir), alice, bob


# Every route that names a job, with the request it takes.
JOB_REQUESTS: list[tuple[str, str, object]] = [
    ("GET", "/training-jobs/{id}", None),
    ("PUT", "/training-jobs/{id}", {"description": "hijacked"}),
    ("POST", "/training-jobs/{id}/actions", {"action_type": "terminate"}),
    ("GET", "/training-jobs/{id}/tasks", None),
    ("GET", "/training-jobs/{id}/tasks/worker-0/logs/preview", None),
    ("GET", "/training-jobs/{id}/logs/worker-0", None),
    ("GET", "/training-jobs/{id}/metrics/worker-0", None),
    ("GET", "/training-jobs/{id}/events", None),
    ("GET", "/training-jobs/{id}/stages", None),
    ("GET", "/modelarts-training-job/{id}/tags", None),
    ("POST", "/modelarts-training-job/{id}/tags/create", {"tags": [{"key": "k", "value": "v"}]}),
    ("DELETE", "/modelarts-training-job/{id}/tags/delete", {"tags": [{"key": "k"}]}),
    ("DELETE", "/training-jobs/{id}", None),
    ("POST", "/training-jobs/batch-delete", {"jobs": [{"kind": "job", "metadata": {"id": "{id}"}}]}),
]


def _answer(client: httpx.Client, method: str, path: str, body: object, job_id: str) -> tuple[int, str]:
    payload = json.loads(json.dumps(body).replace("{id}", job_id)) if body is not None else None
    resp = client.request(method, path.replace("{id}", job_id), json=payload)
    text = resp.text.replace(job_id, "<ID>")
    return resp.status_code, json.dumps({k: v for k, v in json.loads(text).items() if k != "request_id"})


def test_another_projects_job_is_answered_like_a_missing_job(two_tenants: tuple[Server, Key, Key]) -> None:
    server, alice, bob = two_tenants
    a = signed_client(server, alice)
    job_id = a.post("/training-jobs", json=job_body("secret-job", command="echo secret-output; sleep 60")).json()
    job_id = job_id["metadata"]["id"]
    wait_for(lambda: a.get(f"/training-jobs/{job_id}").json()["status"]["phase"] == "Running", timeout=30,
             message="alice's job running")
    wait_for(lambda: "secret-output" in a.get(f"/training-jobs/{job_id}/tasks/worker-0/logs/preview").text,
             timeout=30, message="alice's log")

    b = signed_client(server, bob)
    for method, path, body in JOB_REQUESTS:
        theirs = _answer(b, method, path, body, job_id)
        missing = _answer(b, method, path, body, MISSING_JOB)
        assert theirs == missing, (method, path)
        assert theirs[0] == 400 and "ModelArts.2775" in theirs[1], (method, path, theirs)
    assert b.post("/training-job-searches", json={}).json()["total"] == 0
    names = b.get("/training-job-names", params={"job_name": "secret-job"}).json()
    assert names == {"is_duplicate": False}

    # nothing bob did touched alice's job
    doc = a.get(f"/training-jobs/{job_id}").json()
    assert doc["status"]["phase"] == "Running" and doc["metadata"]["description"] == "test job"
    assert a.post(f"/training-jobs/{job_id}/actions", json={"action_type": "terminate"}).status_code == 202

    # and bob's key does not open alice's project at all (refused before any lookup)
    as_bob_in_a = signed_client(server, bob, project=PROJECT)
    for job in (job_id, MISSING_JOB):
        resp = as_bob_in_a.get(f"/training-jobs/{job}")
        assert (resp.status_code, resp.json()["error_code"]) == (403, "ModelArts.0210")


TRAVERSALS = ["..", "%2e%2e", ".", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fsecurity.db", "..%2F..%2F..%2Fkeys",
              "..%5c..%5cetc", "worker-0%2f..%2f..%2f..%2f..%2fsecurity.db", "%252e%252e%252fsecurity.db",
              "..;%2f..", "%00", "worker-0%00"]


def test_path_traversal_in_every_path_parameter_is_refused(two_tenants: tuple[Server, Key, Key]) -> None:
    server, alice, _ = two_tenants
    a = signed_client(server, alice)
    job_id = a.post("/training-jobs", json=job_body("trav", command="echo the-real-log")).json()["metadata"]["id"]
    wait_for(lambda: a.get(f"/training-jobs/{job_id}").json()["status"]["phase"] == "Completed", timeout=30,
             message="job completion")
    secret = (server.data_dir / "keys" / "master.key").read_text().strip()
    templates = [
        "/v2/{p}/training-jobs/{j}", "/v2/{p}/training-jobs/{j}/tasks", "/v2/{p}/training-jobs/{j}/events",
        "/v2/{p}/training-jobs/{j}/tasks/{t}/logs/preview", "/v2/{p}/training-jobs/{j}/logs/{t}",
        "/v2/{p}/training-jobs/{j}/metrics/{t}", "/v2/{p}/training-jobs/{j}/stages",
    ]
    seen = 0
    for template in templates:
        for bad in TRAVERSALS:
            for p, j, t in ((bad, job_id, "worker-0"), (PROJECT, bad, "worker-0"), (PROJECT, job_id, bad)):
                path = template.format(p=p, j=j, t=t)
                if path == template.format(p=PROJECT, j=job_id, t="worker-0"):
                    continue  # this template does not use the parameter being attacked
                headers = signed_headers("GET", f"{server.url}{path}", alice)
                status, body = raw_request(server, "GET", path, headers)
                assert 400 <= status < 500, (path, status, body[:200])
                assert json.loads(body)["error_code"], path
                assert b"root:" not in body and secret.encode() not in body and b"SQLite" not in body, path
                seen += 1
    assert seen > 150
    assert "the-real-log" in a.get(f"/training-jobs/{job_id}/tasks/worker-0/logs/preview").json()["content"]


def test_cross_project_sdk_reads_look_like_not_found(two_tenants: tuple[Server, Key, Key]) -> None:
    from huaweicloudsdkmodelarts.v1 import ShowTrainingJobDetailsRequest

    from helpers import create_id, expect_error

    server, alice, bob = two_tenants
    job_id = create_id(sdk_for_key(server, alice), job_body("sdk-iso", command="true"))
    bob_sdk = sdk_for_key(server, bob)
    theirs = expect_error(lambda: bob_sdk.show_training_job_details(
        ShowTrainingJobDetailsRequest(training_job_id=job_id)), 400, "ModelArts.2775")
    missing = expect_error(lambda: bob_sdk.show_training_job_details(
        ShowTrainingJobDetailsRequest(training_job_id=MISSING_JOB)), 400, "ModelArts.2775")
    assert theirs.error_msg.replace(job_id, "X") == missing.error_msg.replace(MISSING_JOB, "X")
