"""Authentication through a real server: the official SDK with valid keys does everything; each kind of
bad request is refused with the APIGW/ModelArts status and code; tokens work, expire and are revoked."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    BatchDeleteTrainingJobRequest,
    ChangeTrainingJobDescriptionRequest,
    DeleteTrainingJobRequest,
    ListTrainingJobEventsRequest,
    ListTrainingJobStagesRequest,
    ListTrainingJobTasksRequest,
    ShowTrainingJobDetailsRequest,
    ShowTrainingJobEnginesRequest,
    ShowTrainingJobFlavorsRequest,
    ShowTrainingJobLogsFromAomRequest,
    ShowTrainingJobMetricsRequest,
    StopTrainingJobRequest,
    ValidateTrainingJobNameRequest,
)

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, wait_for
from helpers import create_id, expect_error, job_names, preview, show_json
from security_support import (
    PROJECT_B,
    Key,
    cli,
    create_key,
    create_token,
    error_of,
    sdk_for_key,
    signed_client,
    signed_headers,
)


@dataclass
class Secure:
    server: Server
    alice: Key  # PROJECT
    bob: Key  # PROJECT_B

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir


@pytest.fixture
def secure(make_server: Callable[..., Server], tmp_path: Path) -> Secure:
    data_dir = tmp_path / "secure"
    data_dir.mkdir()
    alice = create_key(data_dir, PROJECT, "alice")
    bob = create_key(data_dir, PROJECT_B, "bob")
    return Secure(make_server(DEFAULT_CONFIG, data_dir=data_dir), alice, bob)


def phase_of(client: httpx.Client, job_id: str) -> str:
    resp = client.get(f"/training-jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"]["phase"])


def wait_phase(client: httpx.Client, job_id: str, phases: tuple[str, ...], timeout: float = 30) -> str:
    return str(wait_for(lambda: (p := phase_of(client, job_id)) in phases and p, timeout=timeout,
                        message=f"{job_id} in {phases}"))


def test_sdk_with_valid_keys_succeeds_on_every_operation(secure: Secure) -> None:
    sdk = sdk_for_key(secure.server, secure.alice)
    poll = signed_client(secure.server, secure.alice)
    assert sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest(flavor_type="CPU")).status_code == 200
    assert sdk.show_training_job_engines(ShowTrainingJobEnginesRequest()).status_code == 200
    assert sdk.validate_training_job_name(ValidateTrainingJobNameRequest(job_name="sec-all")).is_duplicate is False

    job_id = create_id(sdk, job_body("sec-all", command="echo hello-secure"))
    assert show_json(sdk, job_id)["metadata"]["user_name"] == "alice"  # the authenticated user, not the body's
    assert wait_phase(poll, job_id, ("Completed", "Failed")) == "Completed"
    assert "hello-secure" in preview(sdk, job_id).content
    aom = sdk.show_training_job_logs_from_aom(ShowTrainingJobLogsFromAomRequest(
        training_job_id=job_id, task_id="worker-0", lines=10, order="asc"))
    assert aom.status_code == 200 and "hello-secure" in aom.content
    assert sdk.show_training_job_metrics(ShowTrainingJobMetricsRequest(
        training_job_id=job_id, task_id="worker-0")).status_code == 200
    assert sdk.list_training_job_events(ListTrainingJobEventsRequest(
        training_job_id=job_id, pattern="a b+c/d~é", limit=5)).status_code == 200
    assert sdk.list_training_job_stages(ListTrainingJobStagesRequest(training_job_id=job_id)).status_code == 200
    assert sdk.list_training_job_tasks(ListTrainingJobTasksRequest(training_job_id=job_id)).status_code == 200
    assert job_names(sdk) == ["sec-all"]
    assert sdk.change_training_job_description(ChangeTrainingJobDescriptionRequest(
        training_job_id=job_id, body={"description": "changed"})).status_code in (200, 204)

    long_id = create_id(sdk, job_body("sec-long", command="sleep 60"))
    wait_phase(poll, long_id, ("Running",))
    stopped = sdk.stop_training_job(StopTrainingJobRequest(training_job_id=long_id,
                                                           body={"action_type": "terminate"}))
    assert stopped.status_code == 202
    assert wait_phase(poll, long_id, ("Terminated",)) == "Terminated"
    assert sdk.delete_training_job(DeleteTrainingJobRequest(training_job_id=long_id)).status_code == 202
    assert sdk.batch_delete_training_job(BatchDeleteTrainingJobRequest(
        body={"jobs": [{"kind": "job", "metadata": {"id": job_id}}]})).status_code == 202

    # every mutating request is in the audit log: who, what, when, result
    records = json.loads(cli(secure.data_dir, "audit", "list", "--json").stdout)
    mutations = [(r["method"], r["path"].split("/")[-1], r["status"]) for r in records]
    assert [m for m in mutations if m[0] != "GET"] == [
        ("POST", "training-jobs", 201), ("PUT", job_id, 200), ("POST", "training-jobs", 201),
        ("POST", "actions", 202), ("DELETE", long_id, 202), ("POST", "batch-delete", 202)]
    assert {r["principal"] for r in records} == {secure.alice.access_key}
    assert {r["user_name"] for r in records} == {"alice"}
    assert records[0]["target"] == job_id and records[-1]["target"] == job_id
    assert all(r["at"] > 0 and r["request_id"] for r in records)


def _url(server: Server, path: str) -> str:
    return f"{server.url}/v2/{PROJECT}{path}"


def test_bad_signatures_are_refused_with_apig_0301(secure: Secure) -> None:
    srv, alice = secure.server, secure.alice
    wrong = Key(alice.access_key, "x" * 40, alice.project_id, "alice")
    expect_error(lambda: sdk_for_key(srv, wrong).show_training_job_engines(ShowTrainingJobEnginesRequest()),
                 401, "APIGW.0301")
    unknown = Key("NOSUCHKEY00000000000", alice.secret_key, alice.project_id, "alice")
    exc = expect_error(lambda: sdk_for_key(srv, unknown).show_training_job_engines(ShowTrainingJobEnginesRequest()),
                       401, "APIGW.0301")
    assert "ak not exist" in exc.error_msg

    body = json.dumps(job_body("sec-tamper", command="true")).encode()
    url = _url(srv, "/training-jobs")
    headers = signed_headers("POST", url, alice, body)
    altered = httpx.post(url, content=body.replace(b"sec-tamper", b"sec-tampex"), headers=headers)
    assert error_of(altered)[:2] == (401, "APIGW.0301")

    logs = _url(srv, f"/training-jobs/{'0' * 8}/logs/worker-0?lines=5")
    headers = signed_headers("GET", logs, alice)
    assert error_of(httpx.get(logs.replace("lines=5", "lines=6"), headers=headers))[:2] == (401, "APIGW.0301")
    headers = signed_headers("GET", logs, alice, headers={"X-Extra": "1"})
    assert httpx.get(logs, headers={**headers, "X-Extra": "2"}).status_code != 401  # unsigned headers are free

    engines = _url(srv, "/training-job-engines")
    for skew in (timedelta(minutes=-16), timedelta(minutes=16)):
        stale = signed_headers("GET", engines, alice, when=datetime.now(UTC) + skew)
        status, code, msg = error_of(httpx.get(engines, headers=stale))
        assert (status, code) == (401, "APIGW.0301") and "X-Sdk-Date" in msg
    fresh = signed_headers("GET", engines, alice, when=datetime.now(UTC) - timedelta(minutes=10))
    assert httpx.get(engines, headers=fresh).status_code == 200  # inside the 15-minute window

    no_auth = httpx.get(engines)
    assert error_of(no_auth)[:2] == (401, "APIGW.0301")
    assert no_auth.headers["x-request-id"] and no_auth.json()["request_id"] == no_auth.headers["x-request-id"]
    garbage = httpx.get(engines, headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert error_of(garbage)[:2] == (401, "APIGW.0301")
    assert httpx.get(f"{srv.url}/health").status_code == 200  # the one open path
    assert error_of(httpx.get(f"{srv.url}/openapi.json"))[:2] == (401, "APIGW.0301")
    assert job_names(sdk_for_key(srv, alice)) == []  # nothing was created by any refused request


def test_a_replayed_write_is_refused_and_acts_once(secure: Secure) -> None:
    srv, alice = secure.server, secure.alice
    url = _url(srv, "/training-jobs")
    body = json.dumps(job_body("sec-replay", command="true")).encode()
    headers = signed_headers("POST", url, alice, body)
    with httpx.Client() as same:
        assert same.post(url, content=body, headers=headers).status_code == 201
        status, code, msg = error_of(same.post(url, content=body, headers=headers))  # even on its own connection
        assert (status, code) == (401, "APIGW.0301") and "replayed" in msg
    assert error_of(httpx.post(url, content=body, headers=headers))[:2] == (401, "APIGW.0301")
    assert job_names(sdk_for_key(srv, alice)) == ["sec-replay"]
    refused = [r for r in json.loads(cli(secure.data_dir, "audit", "list", "--json").stdout) if r["status"] == 401]
    assert [(r["auth"], r["principal"], r["error_code"], r["method"]) for r in refused] == [
        ("failed", alice.access_key, "APIGW.0301", "POST")] * 2


def test_identical_reads_in_one_second_all_succeed(secure: Secure) -> None:
    """The SDK signs with a one-second X-Sdk-Date and no nonce: two threads of one client reading the
    same thing in the same second send byte-identical requests, on different connections."""
    srv, alice = secure.server, secure.alice
    engines = _url(srv, "/training-job-engines")
    headers = signed_headers("GET", engines, alice)
    with httpx.Client() as one, httpx.Client() as other:
        assert [c.get(engines, headers=headers).status_code for c in (one, other, one, other)] == [200] * 4
    search = _url(srv, "/training-job-searches")  # a POST that only reads is a read
    body = json.dumps({"limit": 10, "filters": [{"key": "phase", "operator": "in", "value": ["Running"]}]}).encode()
    headers = signed_headers("POST", search, alice, body)
    assert [httpx.post(search, content=body, headers=headers).status_code for _ in range(2)] == [200, 200]


def test_many_sdk_threads_on_one_key_are_never_taken_for_replays(make_server: Callable[..., Server],
                                                                tmp_path: Path) -> None:
    data_dir = tmp_path / "threads"
    data_dir.mkdir()
    alice = create_key(data_dir, PROJECT, "alice")
    srv = make_server(DEFAULT_CONFIG + "\n[security]\nrate_limit_per_second = 0\n", data_dir=data_dir)
    sdk = sdk_for_key(srv, alice)  # one client, shared by the threads as an application would
    job_id = create_id(sdk, job_body("sec-threads", command="true"))

    def reads(_: int) -> list[int]:
        return [sdk.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=job_id)).status_code
                for _ in range(10)]

    with ThreadPoolExecutor(16) as pool:
        codes = [c for batch in pool.map(reads, range(16)) for c in batch]
    assert codes == [200] * 160


def test_strict_replay_protection_also_refuses_a_repeated_read(make_server: Callable[..., Server],
                                                               tmp_path: Path) -> None:
    data_dir = tmp_path / "strict"
    data_dir.mkdir()
    alice = create_key(data_dir, PROJECT, "alice")
    srv = make_server(DEFAULT_CONFIG + '\n[security]\nreplay_protection = "strict"\n', data_dir=data_dir)
    engines = _url(srv, "/training-job-engines")
    headers = signed_headers("GET", engines, alice)
    with httpx.Client() as same:
        assert same.get(engines, headers=headers).status_code == 200
        status, code, msg = error_of(same.get(engines, headers=headers))  # even on its own connection
        assert (status, code) == (401, "APIGW.0301") and "replayed" in msg
    assert sdk_for_key(srv, alice).show_training_job_engines(ShowTrainingJobEnginesRequest()).status_code == 200


def test_keys_act_only_in_their_projects(secure: Secure) -> None:
    srv, alice, bob = secure.server, secure.alice, secure.bob
    # bob's key, signed correctly, on alice's project: refused before any job is looked at
    as_bob_in_a = sdk_for_key(srv, bob, project=PROJECT)
    expect_error(lambda: as_bob_in_a.show_training_job_engines(ShowTrainingJobEnginesRequest()), 403, "ModelArts.0210")
    # X-Project-Id must match the URL's project
    url = _url(srv, "/training-job-engines")
    headers = signed_headers("GET", url, alice, headers={"X-Project-Id": PROJECT_B})
    assert error_of(httpx.get(url, headers=headers))[:2] == (403, "ModelArts.0210")
    # a key bound to two projects works in both
    both = create_key(secure.data_dir, PROJECT, "carol", PROJECT_B)
    for project in (PROJECT, PROJECT_B):
        assert sdk_for_key(srv, both, project).show_training_job_engines(
            ShowTrainingJobEnginesRequest()).status_code == 200


def test_a_revoked_key_is_refused_on_the_next_request(secure: Secure) -> None:
    sdk = sdk_for_key(secure.server, secure.alice)
    token = create_token(secure.data_dir, secure.alice)
    assert sdk.show_training_job_engines(ShowTrainingJobEnginesRequest()).status_code == 200
    listed = json.loads(cli(secure.data_dir, "credentials", "list", "--json").stdout)
    assert {c["access_key"] for c in listed} == {secure.alice.access_key, secure.bob.access_key}
    assert "secret" not in json.dumps(listed)
    cli(secure.data_dir, "credentials", "revoke", secure.alice.access_key)
    exc = expect_error(lambda: sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest()), 401, "APIGW.0301")
    assert "revoked" in exc.error_msg
    resp = httpx.get(_url(secure.server, "/training-job-engines"), headers={"X-Auth-Token": token["token"]})
    assert error_of(resp)[:2] == (401, "APIGW.0301")  # its tokens went with it
    assert sdk_for_key(secure.server, secure.bob).show_training_job_engines(
        ShowTrainingJobEnginesRequest()).status_code == 200


def test_secret_keys_are_encrypted_at_rest(secure: Secure) -> None:
    db_bytes = b"".join(p.read_bytes() for p in secure.data_dir.glob("security.db*"))
    assert secure.alice.access_key.encode() in db_bytes
    assert secure.alice.secret_key.encode() not in db_bytes
    assert secure.bob.secret_key.encode() not in db_bytes
    key_file = secure.data_dir / "keys" / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (secure.data_dir / "security.db").stat().st_mode & 0o077 == 0


def test_tokens_work_expire_and_are_revoked(secure: Secure) -> None:
    srv, alice = secure.server, secure.alice
    token = create_token(secure.data_dir, alice, ttl=3600)
    auth = {"X-Auth-Token": token["token"]}
    with httpx.Client(base_url=f"{srv.url}/v2/{PROJECT}", headers=auth, timeout=30) as client:
        created = client.post("/training-jobs", json=job_body("sec-token", command="true"))
        assert created.status_code == 201, created.text
        assert created.json()["metadata"]["user_name"] == "alice"
        assert client.get(f"/training-jobs/{created.json()['metadata']['id']}").status_code == 200
    other = httpx.get(f"{srv.url}/v2/{PROJECT_B}/training-job-engines", headers=auth)
    assert error_of(other)[:2] == (404, "ModelArts.2786")
    bad = httpx.get(_url(srv, "/training-job-engines"), headers={"X-Auth-Token": token["token"] + "x"})
    assert error_of(bad) == (401, "APIGW.0301", "Incorrect IAM authentication information: decrypt token fail")

    cli(secure.data_dir, "token", "revoke", token["token_id"])
    assert error_of(httpx.get(_url(srv, "/training-job-engines"), headers=auth))[:2] == (401, "APIGW.0301")

    short = create_token(secure.data_dir, alice, ttl=1.5)
    engines = _url(srv, "/training-job-engines")
    assert httpx.get(engines, headers={"X-Auth-Token": short["token"]}).status_code == 200

    def expired() -> str | None:
        resp = httpx.get(engines, headers={"X-Auth-Token": short["token"]})
        return resp.json()["error_msg"] if resp.status_code == 401 else None

    assert "token expires" in wait_for(expired, timeout=10, interval=0.2, message="token expiry")


def _iam_body(project: str, **identity: Any) -> dict[str, Any]:
    return {"auth": {"identity": identity, "scope": {"project": {"id": project}}}}


def test_iam_tokens_by_aksk_and_by_password(secure: Secure) -> None:
    srv, alice = secure.server, secure.alice
    iam = f"{srv.url}/v3/auth/tokens"
    with httpx.Client(auth=signed_client(srv, alice).auth, timeout=30) as signed:
        resp = signed.post(iam, json=_iam_body(PROJECT, methods=["hw_ak_sk"]))
        assert resp.status_code == 201, resp.text
        token = resp.headers["X-Subject-Token"]
        assert resp.json()["token"]["project"]["id"] == PROJECT
        assert resp.json()["token"]["user"]["name"] == "alice"
        assert error_of(signed.post(iam, json=_iam_body(PROJECT_B, methods=["hw_ak_sk"])))[:2] == (
            403, "ModelArts.0210")
        projects = signed.get(f"{srv.url}/v3/projects", params={"name": "cn-north-4"})
        assert [p["id"] for p in projects.json()["projects"]] == [PROJECT]
    assert httpx.get(_url(srv, "/training-job-engines"), headers={"X-Auth-Token": token}).status_code == 200

    cli(secure.data_dir, "credentials", "password", "--user", "alice", stdin="correct horse battery\n")
    password = {"user": {"name": "alice", "password": "correct horse battery", "domain": {"name": "x"}}}
    resp = httpx.post(iam, json=_iam_body(PROJECT, methods=["password"], password=password))
    assert resp.status_code == 201, resp.text
    assert httpx.get(_url(srv, "/training-job-engines"),
                     headers={"X-Auth-Token": resp.headers["X-Subject-Token"]}).status_code == 200
    wrong = {"user": {"name": "alice", "password": "wrong password", "domain": {"name": "x"}}}
    for _ in range(5):
        assert error_of(httpx.post(iam, json=_iam_body(PROJECT, methods=["password"], password=wrong)))[:2] == (
            401, "APIGW.0301")
    locked = httpx.post(iam, json=_iam_body(PROJECT, methods=["password"], password=password))
    assert error_of(locked)[:2] == (401, "APIGW.0301") and "limit" in locked.json()["error_msg"]
    nobody = {"user": {"name": "mallory", "password": "whatever1", "domain": {"name": "x"}}}
    assert httpx.post(iam, json=_iam_body(PROJECT, methods=["password"], password=nobody)).status_code == 401
    audit = json.loads(cli(secure.data_dir, "audit", "list", "--json").stdout)
    issued = [r for r in audit if r["path"] == "/v3/auth/tokens" and r["status"] == 201]
    assert [r["auth"] for r in issued] == ["hw_ak_sk", "password"]


def test_the_sdk_raises_its_normal_exceptions(secure: Secure) -> None:
    sdk = sdk_for_key(secure.server, secure.alice)
    with pytest.raises(ClientRequestException) as info:
        sdk.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id="no-such-job"))
    assert (info.value.status_code, info.value.error_code) == (400, "ModelArts.2775")
