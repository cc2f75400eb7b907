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
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from security_support import RequestsSigner, create_key, signed_client

EXAMPLES = int(os.environ.get("OPENARTS_FUZZ_EXAMPLES", "20"))
REPORT = os.environ.get("OPENARTS_FUZZ_REPORT")  # write a JSON summary here (the longer, recorded run)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_CONFIG = DEFAULT_CONFIG + """
[security]
rate_limit_per_second = 100000
rate_limit_burst = 100000
"""


def _pin(raw: dict[str, Any], job_ids: list[str]) -> dict[str, Any]:
    """Path parameters mostly name things that exist, so the fuzzer gets past the lookups."""
    spec = copy.deepcopy(raw)
    choices = {"project_id": {"type": "string", "enum": [PROJECT]},
               "job_id": {"type": "string", "enum": [*job_ids, "no-such-job"]},
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
        algorithm = case.body.get("algorithm")
        if isinstance(algorithm, dict):
            algorithm["command"] = "true"
            for key in ("code_dir", "boot_file", "working_dir"):
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


@pytest.mark.timeout(1800)
def test_fuzz_the_authenticated_api(make_server: Callable[..., Server], tmp_path: Path) -> None:
    data_dir = tmp_path / "fuzz"
    data_dir.mkdir()
    key = create_key(data_dir, PROJECT, "fuzzer")
    server = make_server(FUZZ_CONFIG, data_dir=data_dir)
    client = signed_client(server, key)
    job_ids = [client.post("/training-jobs", json=job_body(f"seed-{i}", command=cmd)).json()["metadata"]["id"]
               for i, cmd in enumerate(["echo seeded", "sleep 600"])]
    wait_for(lambda: client.get(f"/training-jobs/{job_ids[0]}").json()["status"]["phase"] == "Completed",
             timeout=30, message="seed job")
    raw = client.get(f"{server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(_pin(raw, job_ids))

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
