"""Property-based fuzzing of the whole API with schemathesis, against /openapi.json, through a real
server that enforces AK/SK authentication: every request is signed (over its final bytes), valid
(positive) and invalid (negative) requests for every operation. Zero 5xx and zero schema violations.

The number of examples per operation and mode is OPENARTS_FUZZ_EXAMPLES (default 20: about 30 s;
docs/SECURITY.md records a longer run). Job commands are forced to `true` and local code
directories dropped: the fuzzer must not run arbitrary shell on the test machine.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, wait_for
from openarts.api.errors import TABLE
from security_support import Key, RequestsSigner, create_key, signed_client

EXAMPLES = int(os.environ.get("OPENARTS_FUZZ_EXAMPLES", "20"))
REPORT = os.environ.get("OPENARTS_FUZZ_REPORT")  # write a JSON summary here (the longer, recorded run)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_CONFIG = DEFAULT_CONFIG + """
[security]
rate_limit_per_second = 100000
rate_limit_burst = 100000
"""


def _pin(raw: dict[str, Any], job_ids: list[str], algorithm_id: str = "") -> dict[str, Any]:
    """Path parameters mostly name things that exist, so the fuzzer gets past the lookups."""
    spec = copy.deepcopy(raw)
    choices = {"project_id": {"type": "string", "enum": [PROJECT]},
               "job_id": {"type": "string", "enum": [*job_ids, "no-such-job"]},
               "algorithm_id": {"type": "string", "enum": [*([algorithm_id] if algorithm_id else []),
                                                           "no-such-algorithm"]},
               "task_id": {"type": "string", "enum": ["worker-0", "worker-1", "no-such-task"]}}
    for ops in spec["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["in"] == "path" and p["name"] in choices:
                    p["schema"] = choices[p["name"]]
    resource = spec["paths"]["/v2/{project_id}/training-jobs"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["spec"]["properties"]["resource"]["properties"]
    resource["flavor_id"] = {"type": "string", "enum": ["modelarts.local.cpu.1u", "no.such.flavor"]}
    resource["node_count"] = {"type": "integer", "minimum": 1, "maximum": 2}
    scope = spec["paths"]["/v3/auth/tokens"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["auth"]["properties"]["scope"]["properties"]["project"]
    scope["properties"]["id"] = {"type": "string", "enum": [PROJECT, "another-project"]}
    return spec


_SERIAL = itertools.count()
_LAST = ("/actions", "/batch-delete", "DELETE ")  # run these last, in this order: they end the seeded jobs


def _defang(case: Any) -> None:
    """A generated job runs `true`, never generated shell, and copies no local directory."""
    if case.operation.label.endswith("/training-jobs") and isinstance(case.body, dict):
        metadata = case.body.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
            metadata["name"] = f"{metadata['name']}-{next(_SERIAL)}"  # get past the duplicate-name check
        roles = case.body.get("tasks")  # a heterogeneous job's roles, each with its algorithm
        algorithms = [case.body.get("algorithm"), *((t.get("algorithm") for t in roles if isinstance(t, dict))
                                                    if isinstance(roles, list) else ())]
        for algorithm in algorithms:
            if isinstance(algorithm, dict):
                algorithm["command"] = "true"
                for key in ("code_dir", "boot_file", "working_dir", "job_config"):
                    algorithm.pop(key, None)


def _fuzz(operation: Any, mode: schemathesis.GenerationMode, base_url: str, session: requests.Session,
          statuses: Counter[str], failures: list[str]) -> None:
    """EXAMPLES generated requests for one operation in one mode; outcomes go to statuses/failures."""
    positive = mode is schemathesis.GenerationMode.POSITIVE
    checks = CHECKS if positive else [not_a_server_error, response_schema_conformance]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _defang(case)
        try:
            response = case.call(base_url=base_url, session=session, timeout=30)
        except requests.RequestException as exc:
            failures.append(f"{case.operation.label}: transport error {exc}")
            return
        statuses[f"{case.operation.label} {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:
            failures.append(f"{case.operation.label} [{mode.value}] {response.status_code}: {str(exc)[:600]}\n"
                            f"  curl: {case.as_curl_command()[:600]}")

    try:
        run()
    except Unsatisfiable:  # nothing to negate (e.g. GET /health has no parameters)
        statuses[f"{operation.label} [no {mode.value} cases]"] += 0


def _seeded(make_server: Callable[..., Server], tmp_path: Path) -> tuple[Server, Key, httpx.Client, list[str]]:
    """An enforcing server with two seeded jobs (one Completed, one running `sleep 600`) and an algorithm."""
    data_dir = tmp_path / "fuzz"
    data_dir.mkdir()
    key = create_key(data_dir, PROJECT, "fuzzer")
    server = make_server(FUZZ_CONFIG, data_dir=data_dir)
    client = signed_client(server, key)
    job_ids = [client.post("/training-jobs", json=job_body(f"seed-{i}", command=cmd)).json()["metadata"]["id"]
               for i, cmd in enumerate(["echo seeded", "sleep 600"])]
    wait_for(lambda: client.get(f"/training-jobs/{job_ids[0]}").json()["status"]["phase"] == "Completed",
             timeout=30, message="seed job")
    algorithm = client.post("/algorithms", json={"metadata": {"name": "seed-algorithm"},
                                                 "job_config": {"command": "true"}})
    assert algorithm.status_code == 201, algorithm.text
    return server, key, client, [*job_ids, algorithm.json()["metadata"]["id"]]


@pytest.mark.timeout(1800)
def test_fuzz_the_authenticated_api(make_server: Callable[..., Server], tmp_path: Path) -> None:
    server, key, client, seeded = _seeded(make_server, tmp_path)
    job_ids, algorithm_id = seeded[:2], seeded[2]
    raw = client.get(f"{server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(_pin(raw, job_ids, algorithm_id))

    session = requests.Session()
    session.auth = RequestsSigner(key)
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    operations = sorted((r.ok() for r in schema.get_all_operations()),
                        key=lambda op: next((i + 1 for i, m in enumerate(_LAST) if m in op.label), 0))
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _fuzz(operation, mode, server.url, session, statuses, failures)
    summary = {"examples_per_operation_and_mode": EXAMPLES, "requests": sum(statuses.values()),
               "server_errors": sum(n for k, n in statuses.items() if k.rsplit(" ", 1)[-1].startswith("5")),
               "failures": len(failures), "seconds": round(time.monotonic() - started, 1),
               "by_status": dict(sorted(statuses.items()))}
    if REPORT:
        Path(REPORT).write_text(json.dumps({**summary, "failure_details": failures}, indent=2))
    assert not failures, "\n".join(failures[:20])
    assert summary["server_errors"] == 0
    assert summary["requests"] >= EXAMPLES * 10
    assert client.get(f"/training-jobs/{job_ids[1]}").status_code in (200, 400)  # still serving


# -- hostile values in every field ---------------------------------------------------------------------
# Deterministic, on top of the generated cases: each field of each JSON body the OpenAPI document
# declares (plus those of a full valid body), and each query parameter, gets each hostile value in
# turn. Zero 5xx; every refusal a documented code; integers beyond 64 bits refused as invalid
# parameters wherever an integer is expected, and a 2^63 literal refused anywhere; over-deep values
# refused as invalid JSON bodies.

def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


HUGE_INTS = [2**63, 2**64, -2**63 - 1, 10**30]
DEEP = _deep(200)  # beyond the 64-level bound, below orjson's own: it used to crash where stored or echoed
HOSTILE_VALUES: list[Any] = [*HUGE_INTS, [1, "a"], {"a": [1]}, DEEP, "x" * 300_000, "a\x00b",
                             "\x01\x1b[2J\r\n\t\x7f\u2028", "", True, 1.5, -1, None]
HOSTILE_QUERY = ["9223372036854775808", "18446744073709551616", "-9223372036854775809", "1" + "0" * 30,
                 "1" * 5000, "x" * 10_000, "\x00", "a\x00b", "\x01\x1b[2J", "", "[1]", "{}", "1.5", "-1", "0x10",
                 "1_000", "\uff11"]
DOCUMENTED = {code for _cls, _status, code in TABLE} | {"APIGW.0101"}
# query parameters that are integers, whatever /openapi.json declares
INT_QUERY = {"offset", "limit", "start_time", "end_time", "base_line", "lines", "schedule_count", "attempt"}


def _baselines(job_ids: list[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path, a valid body): mutations start from these."""
    create = job_body("mut", command="true")
    create["metadata"].update(workspace_id="0", annotations={"fault-tolerance/job-retry-num": "1"})
    create["algorithm"].update(parameters=[{"name": "epochs", "value": "1"}], environments={"A": "1"},
                               engine={"engine_id": "local-python3"},
                               outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://b/out/"}}}])
    create["spec"].update(schedule_policy={"priority": 1, "preemptible": False},
                          auto_stop={"time_unit": "HOURS", "duration": 1})
    done = job_ids[0]
    one_tag = {"tags": [{"key": "k", "value": "v"}]}
    tag_filter = {"workspace_id": "0", "without_any_tag": False, "tags": [{"key": "k", "values": ["v"]}],
                  "matches": [{"key": "resource_name", "value": "seed"}]}
    return {
        "create_job": ("POST", "/training-jobs", create),
        "search_jobs": ("POST", "/training-job-searches", {
            "offset": 0, "limit": 10, "sort_by": "create_time", "order": "desc", "group_by": "", "workspace_id": "0",
            "filters": [{"key": "create_time", "operator": "between", "value": ["0", "1"]},
                        {"key": "phase", "operator": "in", "value": ["Completed"]}]}),
        "update_job": ("PUT", f"/training-jobs/{done}", {"description": "x",
                                                          "spec": {"schedule_policy": {"priority": 1}}}),
        "batch_delete": ("POST", "/training-jobs/batch-delete", {"jobs": [{"metadata": {"id": "no-such-job"}}]}),
        "job_action": ("POST", f"/training-jobs/{done}/actions", {"action_type": "terminate"}),
        "modify_quotas": ("PUT", "/training-quotas", {"quotas": [{"resource": "gpus", "quota": -1}]}),
        "create_job_tags": ("POST", f"/modelarts-training-job/{done}/tags/create", one_tag),
        "delete_job_tags": ("DELETE", f"/modelarts-training-job/{done}/tags/delete", one_tag),
        "filter_tagged_jobs": ("POST", "/modelarts-training-job/resource-instances/filter", tag_filter),
        "count_tagged_jobs": ("POST", "/modelarts-training-job/resource-instances/count", tag_filter),
        "create_algorithm": ("POST", "/algorithms", {
            "metadata": {"name": "mut-algorithm", "description": "x", "workspace_id": "0"},
            "job_config": {"command": "true", "engine": {"engine_id": "local-python3"},
                           "parameters": [{"name": "lr", "value": "0.1", "description": "x", "constraint": {
                               "type": "Float", "editable": True, "required": False, "valid_type": "Range",
                               "valid_range": ["0", "1"]}}],
                           "inputs": [{"name": "data_url", "description": "x"}], "outputs": [{"name": "train_url"}],
                           "parameters_customization": False},
            "resource_requirements": [{"key": "flavor_type", "values": ["CPU"], "operator": "in"}]}),
        "create_token": ("POST", "/v3/auth/tokens", {"auth": {"identity": {"methods": ["hw_ak_sk"]},
                                                               "scope": {"project": {"id": PROJECT}}}}),
    }


def _schema_paths(schema: dict[str, Any], prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], str]:
    """Every location the schema declares -> its type (an array's items at index 0)."""
    out: dict[tuple[Any, ...], str] = {}
    for name, sub in schema.get("properties", {}).items():
        out[(*prefix, name)] = sub.get("type", "")
        out.update(_schema_paths(sub, (*prefix, name)))
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        out.update(_schema_paths(schema["items"], (*prefix, 0)))
    return out


def _value_paths(value: Any, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], str]:
    out: dict[tuple[Any, ...], str] = {}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        kind = ("boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else
                "string" if isinstance(v, str) else "array" if isinstance(v, list) else "object")
        out[(*prefix, k)] = kind
        out.update(_value_paths(v, (*prefix, k)))
    return out


def _put(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    body = copy.deepcopy(body)
    node = body
    for key, nxt in itertools.pairwise(path):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(node, list):
            while len(node) <= key:
                node.append(copy.deepcopy(empty))
            if not isinstance(node[key], dict | list):
                node[key] = empty
            node = node[key]
        else:
            if not isinstance(node.get(key), dict | list):
                node[key] = empty
            node = node[key]
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return body


def _check(label: str, r: httpx.Response, expect: tuple[int, str] | None, problems: list[str]) -> None:
    if r.status_code >= 500:
        problems.append(f"{label}: {r.status_code} {r.text[:200]}")
        return
    if r.status_code >= 400:
        doc = r.json()
        if doc.get("error_code") not in DOCUMENTED or not doc.get("error_msg") or "Traceback" in r.text:
            problems.append(f"{label}: undocumented error {r.status_code} {r.text[:200]}")
            return
    if expect is not None:
        doc = r.json() if r.content else None
        if (r.status_code, doc.get("error_code") if isinstance(doc, dict) else "") != expect:
            problems.append(f"{label}: want {expect}, got {r.status_code} {r.text[:200]}")


@pytest.mark.timeout(900)
def test_hostile_values_in_every_field(make_server: Callable[..., Server], tmp_path: Path) -> None:
    server, _key, client, seeded = _seeded(make_server, tmp_path)
    job_ids = seeded[:2]
    doc = client.get(f"{server.url}/openapi.json").json()
    ops = {op["operationId"]: op for ops in doc["paths"].values() for op in ops.values()}
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    serial = itertools.count()
    for name, (method, path, baseline) in _baselines(job_ids).items():
        schema = ops[name]["requestBody"]["content"]["application/json"]["schema"]
        fields = {**_value_paths(baseline), **_schema_paths(schema)}
        invalid = "ModelArts.2764" if name == "search_jobs" else "ModelArts.2788"
        url = f"{server.url}{path}" if path.startswith("/v3") else path
        for field, kind in sorted(fields.items(), key=str):
            for value in HOSTILE_VALUES:
                body = _put(baseline, field, value)
                if name == "create_job" and field != ("metadata", "name") and isinstance(body["metadata"], dict):
                    body["metadata"]["name"] = f"mut-{next(serial)}"
                r = client.request(method, url, content=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json;charset=UTF-8"})
                statuses[r.status_code] += 1
                expect: tuple[int, str] | None = None
                if value is DEEP:
                    expect = (400, "ModelArts.2787")  # nested beyond 64 levels
                elif value == 2**63 or (kind == "integer" and value in HUGE_INTS):
                    # refused at the boundary, before any field's own check (so inside a channel too):
                    # the operation's invalid-parameter code
                    expect = (400, invalid)
                _check(f"{method} {path} {'.'.join(map(str, field))}={str(value)[:30]!r}", r, expect, problems)
    for op in ops.values():
        params = [p for p in op.get("parameters", []) if p["in"] == "query"]
        if not params:
            continue
        route, method = next((p, m.upper()) for p, o in doc["paths"].items() for m, x in o.items() if x is op)
        url = server.url + route.format(project_id=PROJECT, job_id=job_ids[0], task_id="worker-0")
        for p in params:
            for value in HOSTILE_QUERY:
                r = client.request(method, url, params={p["name"]: value})  # a POST's optional body left out
                statuses[r.status_code] += 1
                overflow = (p["name"] in INT_QUERY and re.fullmatch(r"-?[0-9]+", value) is not None
                            and (len(value) > 20 or abs(int(value)) >= 2**63))
                _check(f"{method} {route}?{p['name']}={value[:30]!r}", r, (400, "ModelArts.2764") if overflow else None,
                       problems)
    if REPORT:
        Path(REPORT).with_suffix(".hostile.json").write_text(json.dumps(
            {"requests": sum(statuses.values()), "by_status": dict(sorted(statuses.items())),
             "problems": problems}, indent=2))
    assert sum(statuses.values()) > 500
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert statuses[500] == 0
