"""Hostile input through a real, authenticating server: oversized, deeply nested, huge, non-UTF-8,
mistyped and unknown-enum bodies get a clear 4xx ModelArts error (never a 5xx, never half a job);
job parameters reach the worker as data, not shell; each credential is rate-limited (429)."""

from __future__ import annotations

import itertools
import json
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, wait_for
from security_support import PROJECT_B, Key, create_key, create_token, error_of, signed_client

UNLIMITED = DEFAULT_CONFIG + """
[security]
rate_limit_per_second = 100000
rate_limit_burst = 100000
"""
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


@pytest.fixture
def roomy(make_server: Callable[..., Server], tmp_path: Path) -> tuple[Server, Key]:
    """As `guarded`, with a rate limit that many requests in a row do not reach."""
    data_dir = tmp_path / "roomy"
    data_dir.mkdir()
    key = create_key(data_dir, PROJECT, "alice")
    return make_server(UNLIMITED, data_dir=data_dir), key


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
    assert error_of(resp)[:2] == (413, "APIGW.0201")

    def chunks() -> Any:
        for _ in range(14):
            yield b" " * (1 << 20)

    resp = httpx.post(f"{server.url}/v2/{PROJECT}/training-jobs", content=chunks())  # chunked, no length
    assert error_of(resp)[:2] == (413, "APIGW.0201")
    long_uri = client.get("/training-job-names", params={"job_name": "x" * 20_000})
    assert error_of(long_uri)[:2] == (414, "APIGW.0201")
    many = client.get("/training-jobs/x/events", params=[("k", str(i)) for i in range(1500)])
    assert 400 <= many.status_code < 500


def test_parameters_and_environment_reach_the_worker_as_data(guarded: tuple[Server, Key], tmp_path: Path) -> None:
    server, key = guarded
    client = signed_client(server, key)
    marker = "pwned"  # relative: a shell would make it in the worker's (writable) working directory
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
    assert not list(server.data_dir.rglob(marker))


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


# -- numbers, strings and sizes the kernel and SQLite cannot take ------------------------------------

BAD_INTEGERS = ["9223372036854775808", "18446744073709551616", "-9223372036854775809", "1" + "0" * 30, "1" * 5000,
                "1.5", "0x10", "1_000", " 1", "\uff11", "[1]", "1e3", "one", "\x00"]


def test_numeric_query_parameters_are_bounded(roomy: tuple[Server, Key]) -> None:
    """Every integer query parameter: digits only, within 64 bits, then the parameter's own range."""
    server, key = roomy
    client = signed_client(server, key)
    job_id = client.post("/training-jobs", json=job_body("q", command="seq 3")).json()["metadata"]["id"]
    wait_for(lambda: client.get(f"/training-jobs/{job_id}").json()["status"]["phase"] == "Completed",
             timeout=30, message="job end")
    cases = [("events", "offset"), ("events", "limit"), ("events", "start_time"), ("events", "end_time"),
             ("logs/worker-0", "base_line"), ("logs/worker-0", "lines"), ("logs/worker-0", "attempt"),
             ("tasks/worker-0/logs/preview", "attempt"), ("tasks", "schedule_count")]
    for sub, name in cases:
        url = f"/training-jobs/{job_id}/{sub}"
        for value in BAD_INTEGERS:
            r = client.get(url, params={name: value})
            assert error_of(r)[:2] == (400, "ModelArts.2764"), (sub, name, value[:30], r.text[:200])
            assert name in error_of(r)[2]
        assert client.get(url, params={name: "1"}).status_code == 200, (sub, name)
    assert client.get(f"/training-jobs/{job_id}/logs/worker-0", params={"base_line": "-3"}).status_code == 200


def test_an_argument_or_variable_the_kernel_cannot_pass_is_refused_at_create(guarded: tuple[Server, Key]) -> None:
    """A single argv or environment string is at most MAX_ARG_STRLEN (128 KiB, its NUL included): one
    byte more and the job could never start. The largest that fits runs, and the worker sees all of it."""
    server, key = guarded
    client = signed_client(server, key)
    strlen = 128 * 1024
    over: list[tuple[str, dict[str, Any]]] = [
        ("algorithm.environments.BIG", {"environments": {"BIG": "x" * (strlen - len("BIG="))}}),
        ("algorithm.parameters[0].value", {"parameters": [{"name": "big", "value": "x" * (strlen - len("--big="))}]}),
        ("algorithm.command", {"command": "echo " + "\u20ac" * 43_700}),  # 65,536 characters at most, 3 bytes each
    ]
    for field, algorithm in over:
        body = job_body("too-big", command="true")
        body["algorithm"].update(algorithm)
        status, code, message = error_of(client.post("/training-jobs", json=body))
        assert (status, code) == (400, "ModelArts.2788"), (field, message)
        assert field in message and "131072" in message, message
    assert client.post("/training-job-searches", json={}).json()["total"] == 0

    fits = job_body("just-fits", command='f() { echo "env=${#BIG} args=$#"; for a in "$@"; do echo "arg=${#a}"; '
                                         'done; }; f')  # the arguments are appended: f "$@"
    fits["algorithm"]["environments"] = {"BIG": "y" * (strlen - 1 - len("BIG="))}
    fits["algorithm"]["parameters"] = [{"name": "big", "value": "z" * (strlen - 1 - len("--big="))}]
    created = client.post("/training-jobs", json=fits)
    assert created.status_code == 201, created.text
    job_id = created.json()["metadata"]["id"]
    wait_for(lambda: client.get(f"/training-jobs/{job_id}").json()["status"]["phase"] in ("Completed", "Failed"),
             timeout=30, message="job end")
    log = client.get(f"/training-jobs/{job_id}/tasks/worker-0/logs/preview").json()["content"]
    assert f"env={strlen - 1 - 4} args=1" in log and f"arg={strlen - 1}" in log, log


def test_arguments_and_environment_beyond_the_total_limit_are_refused(guarded: tuple[Server, Key]) -> None:
    """Together, argv and the environment must fit the kernel's limit (a quarter of the stack limit,
    at least 128 KiB): with a 1 MiB stack limit on the server, 300 KB of variables can never start."""
    server, key = guarded
    assert server.proc is not None
    _soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    resource.prlimit(server.proc.pid, resource.RLIMIT_STACK, (1 << 20, hard))
    client = signed_client(server, key)
    body = job_body("too-much", command="true")
    body["algorithm"]["environments"] = {f"V{i}": "x" * 100_000 for i in range(3)}
    status, code, message = error_of(client.post("/training-jobs", json=body))
    assert (status, code) == (400, "ModelArts.2788"), message
    assert "algorithm.environments" in message and "262144" in message, message
    body["algorithm"]["environments"] = {f"V{i}": "x" * 50_000 for i in range(3)}  # 150 KB: fits
    created = client.post("/training-jobs", json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()["metadata"]["id"]
    wait_for(lambda: client.get(f"/training-jobs/{job_id}").json()["status"]["phase"] == "Completed",
             timeout=30, message="job end")


CREATE_STRINGS = ["kind", "metadata.name", "metadata.description", "metadata.workspace_id",
                  "metadata.annotations.note", "metadata.annotations.KEY", "algorithm.command", "algorithm.code_dir",
                  "algorithm.boot_file", "algorithm.working_dir", "algorithm.engine.engine_id",
                  "algorithm.engine.engine_name", "algorithm.engine.engine_version",
                  "algorithm.parameters.name", "algorithm.parameters.value", "algorithm.inputs.name",
                  "algorithm.inputs.obs_url", "algorithm.inputs.local_dir", "algorithm.outputs.obs_url",
                  "algorithm.environments.V", "algorithm.environments.KEY", "spec.resource.flavor_id",
                  "spec.resource.pool_id", "spec.schedule_policy.required_affinity.affinity_type",
                  "spec.auto_stop.time_unit"]
DOCUMENTED_400 = {"ModelArts.2787", "ModelArts.2788", "ModelArts.2791", "ModelArts.2780", "ModelArts.2781",
                  "ModelArts.2793", "ModelArts.2753", "ModelArts.2755", "ModelArts.2757", "ModelArts.2758",
                  "ModelArts.2806"}


def _with_string(field: str, text: str, n: int) -> dict[str, Any]:
    body = job_body(f"ctl-{n}", command="true")
    algo, meta, spec = body["algorithm"], body["metadata"], body["spec"]
    channel = {"name": "data_url", "remote": {"obs": {"obs_url": "obs://bucket/data/"}}}
    where: dict[str, Any] = {
        "kind": lambda: body.update(kind=text), "metadata.name": lambda: meta.update(name=text),
        "metadata.description": lambda: meta.update(description=text),
        "metadata.workspace_id": lambda: meta.update(workspace_id=text),
        "metadata.annotations.note": lambda: meta.update(annotations={"note": text}),
        "metadata.annotations.KEY": lambda: meta.update(annotations={text: "1"}),
        "algorithm.command": lambda: algo.update(command=text),
        "algorithm.code_dir": lambda: algo.update(code_dir=text, boot_file="train.py"),
        "algorithm.boot_file": lambda: algo.update(code_dir="/tmp/no-such-code/", boot_file=text),
        "algorithm.working_dir": lambda: algo.update(working_dir="/tmp/" + text),
        "algorithm.engine.engine_id": lambda: algo.update(engine={"engine_id": text}),
        "algorithm.engine.engine_name": lambda: algo.update(engine={"engine_name": text}),
        "algorithm.engine.engine_version": lambda: algo.update(
            engine={"engine_name": "python", "engine_version": text}),
        "algorithm.parameters.name": lambda: algo.update(parameters=[{"name": text, "value": "1"}]),
        "algorithm.parameters.value": lambda: algo.update(parameters=[{"name": "p", "value": text}]),
        "algorithm.inputs.name": lambda: algo.update(inputs=[{**channel, "name": text}]),
        "algorithm.inputs.obs_url": lambda: algo.update(
            inputs=[{**channel, "remote": {"obs": {"obs_url": "obs://bucket/" + text}}}]),
        "algorithm.inputs.local_dir": lambda: algo.update(inputs=[{**channel, "local_dir": "/tmp/" + text}]),
        "algorithm.outputs.obs_url": lambda: algo.update(
            outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bucket/" + text}}}]),
        "algorithm.environments.V": lambda: algo.update(environments={"V": text}),
        "algorithm.environments.KEY": lambda: algo.update(environments={text: "1"}),
        "spec.resource.flavor_id": lambda: spec["resource"].update(flavor_id=text),
        "spec.resource.pool_id": lambda: spec["resource"].update(pool_id=text),
        "spec.schedule_policy.required_affinity.affinity_type": lambda: spec.update(
            schedule_policy={"required_affinity": {"affinity_type": text}}),
        "spec.auto_stop.time_unit": lambda: spec.update(auto_stop={"time_unit": text, "duration": 1}),
    }
    where[field]()
    return body


def test_nul_and_control_characters_in_every_string_field(roomy: tuple[Server, Key]) -> None:
    """NUL is refused in every string field (no process could take it); other control characters are
    refused where documented (the description) and otherwise kept as data. Never a 5xx."""
    server, key = roomy
    client = signed_client(server, key)
    n = itertools.count()
    for field in CREATE_STRINGS:
        for text in ["a\x00b", "\x00", "a\x01b", "\x1b[2J", "line\nbreak", "tab\there", "\x7f", "\u2028", "\ufeff"]:
            r = client.post("/training-jobs", json=_with_string(field, text, next(n)))
            assert r.status_code in (201, 400), (field, repr(text), r.status_code, r.text[:200])
            if r.status_code == 400:
                assert r.json()["error_code"] in DOCUMENTED_400, (field, repr(text), r.text[:200])
            if "\x00" in text:
                assert r.status_code == 400, (field, repr(text), r.text[:200])
    jobs = client.post("/training-job-searches", json={"limit": 50}).json()["items"]
    assert all("\x00" not in json.dumps(j) for j in jobs)
    job_id = next(j["metadata"]["id"] for j in jobs)
    for text in ["a\x00b", "a\x1bb"]:
        status, code, message = error_of(client.put(f"/training-jobs/{job_id}", json={"description": text}))
        assert (status, code) == (400, "ModelArts.2788") and "description" in message
    assert client.put(f"/training-jobs/{job_id}", json={"description": "line\nbreak\tok"}).status_code == 200
    assert client.get(f"/training-jobs/{job_id}").json()["metadata"]["description"] == "line\nbreak\tok"
