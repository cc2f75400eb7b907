"""Hostile input through a real, authenticating server: oversized, deeply nested, huge, non-UTF-8,
mistyped and unknown-enum bodies get a clear 4xx ModelArts error (never a 5xx, never half a job);
job parameters reach the worker as data, not shell; each credential is rate-limited (429)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, wait_for
from security_support import PROJECT_B, Key, create_key, create_token, error_of, signed_client

LIMITED = DEFAULT_CONFIG + """
[security]
rate_limit_per_second = 2
rate_limit_burst = 4
"""


@pytest.fixture
def guarded(make_server: Callable[..., Server], tmp_path: Path) -> tuple[Server, Key]:
    data_dir = tmp_path / "guarded"
    data_dir.mkdir()
    key = create_key(data_dir, PROJECT, "alice")
    return make_server(DEFAULT_CONFIG, data_dir=data_dir), key


def _deep(n: int) -> bytes:
    return b'{"kind":"job","metadata":{"name":"deep","annotations":' + b'{"a":' * n + b'"x"' + b"}" * n + b"}}"


HOSTILE: list[tuple[str, bytes]] = [
    ("deep nesting", _deep(100_000)),
    ("deep arrays", b"[" * 200_000 + b"]" * 200_000),
    ("moderate nesting", _deep(500)),
    ("huge parameters array", json.dumps({**job_body("huge", command="true"), "algorithm": {
        "command": "true", "parameters": [{"name": f"p{i}", "value": "1"} for i in range(50_000)]}}).encode()),
    ("huge environments", json.dumps({**job_body("env", command="true"), "algorithm": {
        "command": "true", "environments": {f"E{i}": "x" for i in range(20_000)}}}).encode()),
    ("invalid utf-8", b'{"kind":"job","metadata":{"name":"\xff\xfe"}}'),
    ("lone surrogate", b'{"kind":"job","metadata":{"name":"\\ud800"}}'),
    ("not json", b"kind: job"),
    ("json array", b"[1, 2, 3]"),
    ("json string", b'"job"'),
    ("wrong types", json.dumps({"kind": 7, "metadata": [], "algorithm": "x", "spec": {"resource": 1}}).encode()),
    ("node_count as text", json.dumps(job_body("t", command="true", node_count="two")).encode()),  # type: ignore[arg-type]
    ("node_count huge", json.dumps(job_body("t", command="true", node_count=10**30)).encode()),
    ("unknown kind", json.dumps({**job_body("k", command="true"), "kind": "rocket"}).encode()),
    ("unknown flavor", json.dumps({**job_body("f", command="true"),
                                   "spec": {"resource": {"flavor_id": "no.such.flavor", "node_count": 1}}}).encode()),
    ("NaN", b'{"kind":"job","metadata":{"name":"n"},"spec":{"resource":{"node_count":NaN}}}'),
    ("empty", b""),
]


def test_hostile_create_bodies_get_a_clear_4xx_and_create_nothing(guarded: tuple[Server, Key]) -> None:
    server, key = guarded
    client = signed_client(server, key)
    for name, body in HOSTILE:
        resp = client.post("/training-jobs", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text[:300])
        doc = resp.json()
        assert doc["error_code"].startswith("ModelArts.") and doc["error_msg"], name
        assert "Traceback" not in resp.text, name
    for name, body in HOSTILE[:8]:  # the other body routes too
        for path in ("/training-job-searches", "/training-jobs/batch-delete"):
            resp = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert resp.status_code < 500 and (resp.status_code == 200 or resp.json()["error_code"]), (name, path)
    assert client.post("/training-job-searches", json={}).json()["total"] == 0  # never half a job
    assert not list((server.data_dir / "jobs").glob("*"))
    assert client.get("/training-job-engines").status_code == 200  # and the server is fine


def test_size_limits(guarded: tuple[Server, Key]) -> None:
    server, key = guarded
    client = signed_client(server, key)
    big = json.dumps({**job_body("big", command="true"), "metadata": {"name": "big", "description": "x" * (2 << 20)}})
    assert error_of(client.post("/training-jobs", content=big))[:2] == (400, "ModelArts.2787")
    huge = b"{" + b" " * (13 << 20) + b"}"
    resp = httpx.post(f"{server.url}/v2/{PROJECT}/training-jobs", content=huge)  # refused before reading it
    assert error_of(resp)[:2] == (413, "APIG.0201")

    def chunks() -> Any:
        for _ in range(14):
            yield b" " * (1 << 20)

    resp = httpx.post(f"{server.url}/v2/{PROJECT}/training-jobs", content=chunks())  # chunked, no length
    assert error_of(resp)[:2] == (413, "APIG.0201")
    long_uri = client.get("/training-job-names", params={"job_name": "x" * 20_000})
    assert error_of(long_uri)[:2] == (414, "APIG.0201")
    many = client.get("/training-jobs/x/events", params=[("k", str(i)) for i in range(1500)])
    assert 400 <= many.status_code < 500


def test_parameters_and_environment_reach_the_worker_as_data(guarded: tuple[Server, Key], tmp_path: Path) -> None:
    server, key = guarded
    client = signed_client(server, key)
    marker = tmp_path / "pwned"
    evil = f"$(touch {marker}); `touch {marker}`; touch {marker} #"
    body = job_body("shell", command='for a in "$@"; do echo "ARG[$a]"; done; echo "ENV[$EVIL]"')
    body["algorithm"]["parameters"] = [{"name": "evil", "value": evil}]
    env_evil = f"`touch {marker}`; touch {marker} #"  # the service refuses '$' in environment values
    body["algorithm"]["environments"] = {"EVIL": env_evil}
    created = client.post("/training-jobs", json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()["metadata"]["id"]
    wait_for(lambda: client.get(f"/training-jobs/{job_id}").json()["status"]["phase"] in ("Completed", "Failed"),
             timeout=30, message="job end")
    log = client.get(f"/training-jobs/{job_id}/tasks/worker-0/logs/preview").json()["content"]
    assert f"ARG[--evil={evil}]" in log and f"ENV[{env_evil}]" in log, log
    assert not marker.exists()


def test_each_credential_is_rate_limited(make_server: Callable[..., Server], tmp_path: Path) -> None:
    data_dir = tmp_path / "limited"
    data_dir.mkdir()
    alice, bob = create_key(data_dir, PROJECT, "alice"), create_key(data_dir, PROJECT_B, "bob")
    server = make_server(LIMITED, data_dir=data_dir)
    a = signed_client(server, alice)
    statuses = [a.get("/training-job-engines") for _ in range(12)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and statuses[0].status_code == 200
    assert error_of(limited[0])[:2] == (429, "ModelArts.2799")
    assert int(limited[0].headers["retry-after"]) >= 1
    assert signed_client(server, bob).get("/training-job-engines").status_code == 200  # per credential
    token = create_token(data_dir, bob)
    with httpx.Client(base_url=f"{server.url}/v2/{PROJECT_B}", headers={"X-Auth-Token": token["token"]}) as t:
        codes = [t.get("/training-job-engines").status_code for _ in range(12)]
    assert 429 in codes
    wait_for(lambda: a.get("/training-job-engines").status_code == 200, timeout=10, interval=0.3,
             message="the bucket refills")
