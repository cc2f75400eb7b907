"""Bad input through the official SDK (raw httpx only for what the SDK cannot send): every documented
mistake gets 400 with its ModelArts error code, creates nothing, and never shows a traceback."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkmodelarts.v1 import ShowTrainingJobFlavorsRequest

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body
from helpers import create, expect_error, sdk_client, search, show, wait_phase

FLAVOR = "modelarts.local.cpu.1u"


# One server for the whole module: nothing here is meant to create a job, and each test checks that.
@pytest.fixture(scope="module")
def vserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("validation")
    (root / "data").mkdir()
    s = Server(root / "data", DEFAULT_CONFIG, root / "server.log").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def vsdk(vserver: Server, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as mp:  # the SDK writes ~/.huaweicloud on import
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        return sdk_client(vserver)


@pytest.fixture
def raw(vserver: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vserver.api, timeout=30) as client:
        yield client


def _no_jobs(sdk: Any, server: Server) -> None:
    """Nothing half-created: the list is empty and no job directory exists."""
    listed = search(sdk)
    assert (listed.total, listed.count) == (0, 0)
    jobs_dir = server.data_dir / "jobs"
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


def _good(name: str = "valid-job") -> dict[str, Any]:
    return job_body(name, command="true")


def _with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = copy.deepcopy(_good())
    change(body)
    return body


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        del node[last]
    return apply


def _channel(kind: str, url: str) -> Callable[[dict[str, Any]], None]:
    name = "data_url" if kind == "inputs" else "train_url"
    return _set(f"algorithm.{kind}", [{"name": name, "remote": {"obs": {"obs_url": url}}}])


BAD_BODIES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # (id, change, error code, a fragment of the message)
    ("missing-name", _drop("metadata.name"), "ModelArts.2788", "metadata.name"),
    ("empty-name", _set("metadata.name", ""), "ModelArts.2788", "metadata.name"),
    ("bad-name-chars", _set("metadata.name", "bad name!"), "ModelArts.2788", "metadata.name"),
    ("name-with-dot", _set("metadata.name", "a.b"), "ModelArts.2788", "metadata.name"),
    ("name-65-chars", _set("metadata.name", "n" * 65), "ModelArts.2788", "metadata.name"),
    ("name-not-string", _set("metadata.name", 12), "ModelArts.2788", "metadata.name"),
    ("missing-metadata", _drop("metadata"), "ModelArts.2788", "metadata"),
    ("description-257", _set("metadata.description", "d" * 257), "ModelArts.2788", "description"),
    ("101-environments", _set("algorithm.environments", {f"V{i}": "x" for i in range(101)}), "ModelArts.2788",
     "environments"),
    ("dollar-in-env", _set("algorithm.environments", {"A": "ok", "B": "$HOME"}), "ModelArts.2788", "$"),
    ("env-not-map", _set("algorithm.environments", "A=1"), "ModelArts.2788", "environments"),
    ("spec-and-tasks", _set("tasks", [{"role": "worker", "task_resource": {"flavor_id": FLAVOR, "node_count": 1}}]),
     "ModelArts.2788", "tasks"),
    ("unknown-flavor", _set("spec.resource.flavor_id", "modelarts.vm.gpu.p100"), "ModelArts.2781",
     "modelarts.vm.gpu.p100"),
    ("missing-flavor", _drop("spec.resource.flavor_id"), "ModelArts.2788", "flavor_id"),
    ("unknown-engine-id", _set("algorithm.engine", {"engine_id": "pytorch-cp36-1.4.0-v2"}), "ModelArts.2780",
     "pytorch-cp36-1.4.0-v2"),
    ("unknown-engine-name", _set("algorithm.engine", {"engine_name": "TensorFlow", "engine_version": "1.8"}),
     "ModelArts.2780", "TensorFlow"),
    ("node-count-string", _set("spec.resource.node_count", "2"), "ModelArts.2788", "node_count"),
    ("node-count-float", _set("spec.resource.node_count", 1.5), "ModelArts.2788", "node_count"),
    ("node-count-bool", _set("spec.resource.node_count", True), "ModelArts.2788", "node_count"),
    ("node-count-zero", _set("spec.resource.node_count", 0), "ModelArts.2788", "node_count"),
    ("node-count-negative", _set("spec.resource.node_count", -1), "ModelArts.2788", "node_count"),
    ("input-dotdot", _channel("inputs", "obs://bucket/../etc/"), "ModelArts.2791", ".."),
    ("output-dotdot", _channel("outputs", "obs://bucket/out/../../x/"), "ModelArts.2791", ".."),
    ("input-no-bucket", _channel("inputs", "obs://"), "ModelArts.2791", "obs://"),
    ("input-http-url", _channel("inputs", "http://example.com/data/"), "ModelArts.2791", "http://"),
    ("code-dir-dotdot", _set("algorithm", {"code_dir": "obs://bucket/../code/", "boot_file": "train.py"}),
     "ModelArts.2791", ".."),
    ("boot-file-escapes", _set("algorithm", {"code_dir": "/tmp/code/", "boot_file": "../evil.py"}),
     "ModelArts.2758", "evil.py"),
    ("boot-file-elsewhere", _set("algorithm", {"code_dir": "/tmp/code/", "boot_file": "/tmp/other/train.py"}),
     "ModelArts.2758", "not inside code_dir"),
    ("boot-file-without-code-dir", _set("algorithm", {"boot_file": "train.py"}), "ModelArts.2757", "code_dir"),
    ("code-dir-relative", _set("algorithm", {"code_dir": "code/", "boot_file": "train.py"}), "ModelArts.2757",
     "code_dir"),
    ("no-command-no-boot-file", _set("algorithm", {}), "ModelArts.2806", "command"),
    ("kind-not-job", _set("kind", "notebook"), "ModelArts.2788", "kind"),
    ("param-value-nul", _set("algorithm.parameters", [{"name": "p", "value": "a\x00b"}]), "ModelArts.2788",
     "parameters[0].value"),
    ("param-name-with-equals", _set("algorithm.parameters", [{"name": "a=b", "value": "1"}]), "ModelArts.2788",
     "parameters[0].name"),
    ("param-name-leading-dash", _set("algorithm.parameters", [{"name": "-x", "value": "1"}]), "ModelArts.2788",
     "parameters[0].name"),
    ("parameters-not-list", _set("algorithm.parameters", "epochs=2"), "ModelArts.2788", "parameters"),
    ("input-without-remote", _set("algorithm.inputs", [{"name": "data_url"}]), "ModelArts.2753", "remote"),
    ("input-without-name", _set("algorithm.inputs", [{"remote": {"obs": {"obs_url": "obs://b/d/"}}}]),
     "ModelArts.2753", "inputs[0].name"),
    ("output-without-obs-url", _set("algorithm.outputs", [{"name": "train_url", "remote": {"obs": {}}}]),
     "ModelArts.2753", "obs_url"),
    ("outputs-not-list", _set("algorithm.outputs", "obs://b/out/"), "ModelArts.2753", "outputs"),
    ("algorithm-id", _set("algorithm", {"id": "2e5451fe-913f-4492-821a-2981031382f7"}), "ModelArts.2755",
     "algorithm"),
    ("algorithm-subscription", _set("algorithm", {"subscription_id": "s", "item_version_id": "v"}),
     "ModelArts.2755", "algorithm"),
]


@pytest.mark.parametrize(("change", "code", "fragment"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_bad_create_body(vsdk: Any, vserver: Server, change: Callable[[dict[str, Any]], None], code: str,
                         fragment: str) -> None:
    exc = expect_error(lambda: create(vsdk, _with(change)), 400, code)
    assert fragment in exc.error_msg
    _no_jobs(vsdk, vserver)


def test_node_count_above_max_num(vsdk: Any, vserver: Server) -> None:
    flavors = vsdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest(flavor_type="CPU")).flavors
    max_num = next(f.max_num for f in flavors if f.flavor_id == FLAVOR)
    body = _with(_set("spec.resource.node_count", max_num + 1))
    exc = expect_error(lambda: create(vsdk, body), 400, "ModelArts.2793")
    assert str(max_num) in exc.error_msg
    _no_jobs(vsdk, vserver)


@pytest.mark.parametrize(("url", "says"), [
    ("team/pytorch:1.8", "no [[registries]] entry is the default"),  # no host, no default registry
    ("swr.example.com/team/py torch:1.8", "not an image reference"),
    ("docker://swr.example.com/team/pytorch:1.8", "not an image reference"),
    ("swr.example.com/team/pytorch@sha256:abc", "sha256: and 64 hex digits"),
])
def test_malformed_image_url_is_refused_with_a_clear_message(vsdk: Any, vserver: Server, url: str, says: str) -> None:
    body = _with(_set("algorithm.engine", {"image_url": url}))
    exc = expect_error(lambda: create(vsdk, body), 400, "ModelArts.2788")
    assert "algorithm.engine.image_url" in exc.error_msg and says in exc.error_msg, exc.error_msg
    _no_jobs(vsdk, vserver)


@pytest.mark.parametrize("payload",
                         [b"{not json", b"", b"   ", b'{"kind": "job",', b"[]", b"null", b'"job"', b"\xff\xfe"],
                         ids=["garbage", "empty", "blank", "truncated", "array", "null", "string", "not-utf8"])
def test_invalid_json_body(raw: httpx.Client, vsdk: Any, vserver: Server, payload: bytes) -> None:
    r = raw.post("/training-jobs", content=payload, headers={"Content-Type": "application/json;charset=utf-8"})
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "ModelArts.2787"
    assert r.headers["x-request-id"]
    assert "Traceback" not in r.text
    _no_jobs(vsdk, vserver)


def test_oversized_body(raw: httpx.Client, vsdk: Any, vserver: Server) -> None:
    body = _with(_set("metadata.annotations", {"big": "x" * (2 * 1024 * 1024)}))
    r = raw.post("/training-jobs", json=body)
    assert r.status_code == 400
    assert r.json()["error_code"] == "ModelArts.2787"
    _no_jobs(vsdk, vserver)


# Wrong JSON types anywhere in the body: always a 400 with a ModelArts code, never a 500.
WRONG_TYPES: list[Callable[[dict[str, Any]], None]] = [
    _set("metadata", "meta"), _set("metadata", []), _set("algorithm", "python train.py"), _set("spec", 1),
    _set("spec.resource", []), _set("spec.resource.flavor_id", {"id": FLAVOR}), _set("algorithm.command", ["echo"]),
    _set("algorithm.parameters", [1, 2]), _set("algorithm.parameters", [{"name": {"n": 1}, "value": "1"}]),
    _set("algorithm.parameters", [{"name": "p", "value": {"v": 1}}]), _set("algorithm.inputs", {"name": "x"}),
    _set("algorithm.inputs", [{"name": "d", "remote": "obs://b/d/"}]),
    _set("algorithm.inputs", [{"name": "d", "remote": {"obs": {"obs_url": 7}}}]),
    _set("algorithm.environments", [1, 2]), _set("algorithm.environments", {"A": {"B": 1}}),
    _set("algorithm.environments", {"1BAD": "x"}), _set("metadata.annotations", {"k": {"nested": True}}),
    _set("metadata.annotations", ["a"]), _set("algorithm.engine", "python"), _set("spec.schedule_policy", 3),
    _set("spec.schedule_policy.priority", "high"), _set("spec.schedule_policy.preemptible", "yes"),
    _set("spec.resource.pool_id", 5), _set("spec.resource.pool_id", "no-such-pool"), _set("metadata.workspace_id", 0),
    _set("algorithm.working_dir", "relative/dir"), _set("algorithm.code_dir", "relative/code"),
    _set("algorithm.command", "echo \x00"), _set("endpoints", "ssh"),
]


def test_wrong_types_are_400_not_500(raw: httpx.Client, vsdk: Any, vserver: Server) -> None:
    for i, change in enumerate(WRONG_TYPES):
        r = raw.post("/training-jobs", json=_with(change))
        assert r.status_code == 400, (i, r.status_code, r.text)
        assert r.json()["error_code"].startswith("ModelArts."), (i, r.text)
        assert r.headers["x-request-id"]
        assert "Traceback" not in r.text
    _no_jobs(vsdk, vserver)


# -- search ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "code"), [
    ({"limit": 0}, "ModelArts.2764"),
    ({"limit": 51}, "ModelArts.2764"),
    ({"offset": -1}, "ModelArts.2764"),
    ({"order": "up"}, "ModelArts.2764"),
    ({"sort_by": "gpu_count"}, "ModelArts.2790"),
    ({"filters": [{"key": "color", "operator": "in", "value": ["red"]}]}, "ModelArts.2789"),
    ({"filters": [{"key": "name", "operator": "regex", "value": ["a.*"]}]}, "ModelArts.2789"),
    ({"filters": [{"key": "name", "operator": "between", "value": ["a", "b"]}]}, "ModelArts.2789"),
    ({"filters": [{"key": "create_time", "operator": "between", "value": ["1"]}]}, "ModelArts.2789"),
    ({"filters": [{"key": "name", "operator": "like", "value": []}]}, "ModelArts.2764"),
], ids=["limit-0", "limit-51", "offset-negative", "bad-order", "sort-by", "filter-key", "filter-operator",
        "between-on-name", "between-one-value", "empty-value"])
def test_bad_search(vsdk: Any, body: dict[str, Any], code: str) -> None:
    expect_error(lambda: search(vsdk, **body), 400, code)


DOCUMENTED_FILTERS = [  # the filter keys and operators of the API reference's list example
    {"key": "name", "operator": "like", "value": ["job"]},
    {"key": "create_time", "operator": "between", "value": ["1636447346315", "1736447346315"]},
    {"key": "phase", "operator": "in", "value": ["Running", "Completed"]},
    {"key": "kind", "operator": "in", "value": ["job"]},
    {"key": "user_id", "operator": "in", "value": ["a5fd4ba1c2d94ba69b1d96b7ab2e24f3"]},
    {"key": "algorithm_name", "operator": "like", "value": ["mnist"]},
    {"key": "runtime_type", "operator": "in", "value": ["debug"]},
]


@pytest.mark.parametrize("flt", DOCUMENTED_FILTERS, ids=[str(f["key"]) for f in DOCUMENTED_FILTERS])
def test_documented_filter_keys_are_accepted(vsdk: Any, flt: dict[str, Any], request: pytest.FixtureRequest) -> None:
    listed = search(vsdk, filters=[flt])
    assert (listed.total, listed.items) == (0, [])


def test_search_limit_bounds_are_inclusive(vsdk: Any) -> None:
    assert search(vsdk, limit=1).limit == 1
    assert search(vsdk, limit=50).limit == 50


# -- routes, headers ---------------------------------------------------------------------------------

def test_unknown_route_is_a_json_error(vserver: Server) -> None:
    with httpx.Client(base_url=vserver.url, timeout=10) as client:
        for method, path in [("GET", f"/v2/{PROJECT}/no-such-thing"), ("GET", "/v1/whatever"),
                             ("POST", f"/v2/{PROJECT}/training-jobs/x/y/z"), ("GET", "/"),
                             ("PATCH", f"/v2/{PROJECT}/training-jobs/abc"), ("DELETE", f"/v2/{PROJECT}/training-jobs")]:
            r = client.request(method, path)
            assert r.status_code in (404, 405), (method, path, r.status_code)
            assert r.headers["content-type"].startswith("application/json")
            body = r.json()
            assert body["error_code"] and body["error_msg"], body
            assert r.headers["x-request-id"]
            assert "Traceback" not in r.text


def test_trailing_slash_is_not_a_silent_redirect(raw: httpx.Client, vsdk: Any, vserver: Server) -> None:
    for method, path in [("POST", "/training-jobs/"), ("GET", "/training-job-flavors/"),
                         ("POST", "/training-job-searches/"), ("DELETE", "/training-jobs/abc/")]:
        r = raw.request(method, path, json=_good("slash") if method == "POST" else None)
        same = raw.request(method, path.rstrip("/"), json=_good("slash") if method == "POST" else None)
        assert r.status_code >= 400 or r.status_code == same.status_code, (method, path, r.status_code)
        assert r.headers["content-type"].startswith("application/json"), (method, path, r.status_code)


def test_every_response_has_a_request_id(vsdk: Any, vserver: Server, raw: httpx.Client) -> None:
    responses = [
        raw.get("/training-job-flavors"), raw.get("/training-job-engines"), raw.post("/training-job-searches", json={}),
        raw.get("/training-job-names", params={"job_name": "x"}), raw.get("/training-jobs/nope"),
        raw.post("/training-jobs", content=b"{"), raw.delete("/training-jobs/nope"),
        httpx.get(f"{vserver.url}/health"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids), "request ids are unique"
    assert all("Traceback" not in r.text for r in responses)
    exc = expect_error(lambda: show(vsdk, "nope"), 400, "ModelArts.2775")
    assert exc.request_id


def test_job_names_needs_a_name(raw: httpx.Client) -> None:
    r = raw.get("/training-job-names")
    assert r.status_code == 400
    assert r.json()["error_code"] == "ModelArts.2764"


def test_limits_are_inclusive(sdk: Any) -> None:
    """The largest allowed values are accepted: 64-character name, 256-character description, 100
    environment variables, node_count == max_num."""
    flavors = sdk.show_training_job_flavors(ShowTrainingJobFlavorsRequest(flavor_type="CPU")).flavors
    max_num = next(f.max_num for f in flavors if f.flavor_id == FLAVOR)
    body = job_body("n" * 64, command="true", environments={f"V{i}": "x" for i in range(100)})
    body["metadata"]["description"] = "d" * 256
    created = create(sdk, body)
    assert created.metadata.name == "n" * 64
    assert created.metadata.description == "d" * 256
    assert len(created.algorithm.environments[0]) == 100
    assert wait_phase(sdk, created.metadata.id).status.phase == "Completed"
    wide = create(sdk, job_body("max-nodes", command="true", node_count=max_num))
    assert wide.spec.resource.node_count == max_num
    assert wait_phase(sdk, wide.metadata.id).status.phase == "Completed"


# -- accepted, then fails to prepare -----------------------------------------------------------------

def test_missing_code_dir_ends_abnormal(sdk: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "code"
    body = job_body("no-code", code_dir=str(missing), boot_file="train.py")
    created = create(sdk, body)
    job = wait_phase(sdk, created.metadata.id)
    st = job.status
    assert (st.phase, st.secondary_phase) == ("Abnormal", "CreateFailed")
    assert st.task_statuses, "the reason is reported"
    message = st.task_statuses[0].message
    assert str(missing) in message and "does not exist" in message
    assert st.running_records == []
    assert st.duration == 0
    assert search(sdk).items[0].status.phase == "Abnormal"


def test_missing_boot_file_ends_abnormal(sdk: Any, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "other.py").write_text("print('not me')\n")
    created = create(sdk, job_body("no-boot-file", code_dir=str(code), boot_file="train.py"))
    job = wait_phase(sdk, created.metadata.id)
    assert (job.status.phase, job.status.secondary_phase) == ("Abnormal", "CreateFailed")
    assert "train.py" in job.status.task_statuses[0].message


def test_missing_input_data_ends_abnormal(sdk: Any) -> None:
    body = job_body("no-input", command="true",
                    inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bucket/missing/"}}}])
    created = create(sdk, body)
    job = wait_phase(sdk, created.metadata.id)
    assert (job.status.phase, job.status.secondary_phase) == ("Abnormal", "CreateFailed")
    assert "obs://bucket/missing/" in job.status.task_statuses[0].message


# -- integers beyond 64 bits, wrong shapes, deep nesting, media types --------------------------------
# Each must be a 400 (415 for a media type) with the documented code, before anything reaches SQLite.

def _none_created(raw: httpx.Client) -> None:
    """No job of these tests' body (_good: "valid-job") was created (earlier tests of the module may
    have created others)."""
    found = raw.post("/training-job-searches", json={"filters": [{"key": "name", "operator": "like",
                                                                  "value": ["valid-job"]}]}).json()
    assert found["total"] == 0, found


HUGE_INTS = [2**63, 2**64, -2**63 - 1, 10**30]
CREATE_INTS: list[tuple[str, Callable[[Any], Callable[[dict[str, Any]], None]]]] = [
    ("node_count", lambda v: _set("spec.resource.node_count", v)),
    ("priority", lambda v: _set("spec.schedule_policy.priority", v)),
    ("duration", lambda v: _set("spec.auto_stop", {"time_unit": "HOURS", "duration": v})),
    ("affinity_group_size", lambda v: _set("spec.schedule_policy.required_affinity",
                                           {"affinity_type": "hyperinstance", "affinity_group_size": v})),
]


@pytest.mark.parametrize("value", HUGE_INTS, ids=["2^63", "2^64", "-2^63-1", "10^30"])
def test_integers_beyond_64_bits_in_a_create_body(raw: httpx.Client, vsdk: Any, vserver: Server, value: int) -> None:
    for field, change in CREATE_INTS:
        r = raw.post("/training-jobs", json=_with(change(value)))
        assert (r.status_code, r.json()["error_code"]) == (400, "ModelArts.2788"), (field, r.text)
        assert field.split(".")[0] in r.json()["error_msg"], (field, r.text)
    _none_created(raw)


@pytest.mark.parametrize("value", [2**63, 2**64 - 1], ids=["2^63", "2^64-1"])
def test_integers_beyond_64_bits_anywhere_in_a_body(raw: httpx.Client, vsdk: Any, vserver: Server,
                                                   value: int) -> None:
    """Where a field takes a number as text (parameters, environments, annotations) or is not one the
    server reads, an integer literal must still fit in signed 64 bits. (Beyond 2^64-1 or below -2^63 the
    JSON parser yields a float, which such fields take as text and integer fields refuse.)"""
    for field, change in [
        ("metadata.annotations.fault-tolerance/job-retry-num",
         _set("metadata.annotations", {"fault-tolerance/job-retry-num": value})),
        ("algorithm.parameters[0].value", _set("algorithm.parameters", [{"name": "epochs", "value": value}])),
        ("algorithm.environments.N", _set("algorithm.environments", {"N": value})),
        ("metadata.labels.size", _set("metadata.labels", {"size": value})),
    ]:
        r = raw.post("/training-jobs", json=_with(change))
        assert (r.status_code, r.json()["error_code"]) == (400, "ModelArts.2788"), (field, r.text)
        assert field in r.json()["error_msg"], (field, r.text)
    _none_created(raw)


def _search_ints(v: int) -> list[dict[str, Any]]:
    return [{"offset": v}, {"limit": v},
            {"filters": [{"key": "create_time", "operator": "between", "value": [0, v]}]},
            {"filters": [{"key": "create_time", "operator": "between", "value": [v, 1]}]},
            {"filters": [{"key": "phase", "operator": "in", "value": [v]}]},
            {"filters": [{"key": "phase", "operator": "not", "value": ["Running", v]}]},
            {"filters": [{"key": "name", "operator": "like", "value": [v]}]},
            {"filters": [{"key": "kind", "operator": "in", "value": [v]}]}]


@pytest.mark.parametrize("value", HUGE_INTS, ids=["2^63", "2^64", "-2^63-1", "10^30"])
def test_integers_beyond_64_bits_in_other_bodies(raw: httpx.Client, value: int) -> None:
    for body in _search_ints(value):
        r = raw.post("/training-job-searches", json=body)
        assert (r.status_code, r.json()["error_code"]) == (400, "ModelArts.2764"), (body, r.text)
    others: list[tuple[str, str, dict[str, Any]]] = [
        ("/training-jobs/nope", "PUT", {"spec": {"schedule_policy": {"priority": value}}}),
        ("/training-jobs/nope", "PUT", {"description": value}),
        ("/training-quotas", "PUT", {"quotas": [{"resource": "gpus", "quota": value}]}),
        ("/training-jobs/batch-delete", "POST", {"jobs": [{"metadata": {"id": value}}]}),
        # a field the server does not read: only an integer literal (2^63 parses as one) is refused
        *([("/training-jobs/nope/actions", "POST", {"action_type": "terminate", "grace": value})]
          if value == 2**63 else []),
    ]
    for path, method, body in others:
        r = raw.request(method, path, json=body)
        assert (r.status_code, r.json()["error_code"]) == (400, "ModelArts.2788"), (path, body, r.text)
    assert raw.get("/training-quotas").json()["quotas"][0]["quota"] == -1  # nothing was changed


@pytest.mark.parametrize(("body", "code"), [
    ({"sort_by": ["create_time"]}, "ModelArts.2764"), ({"sort_by": {"create_time": 1}}, "ModelArts.2764"),
    ({"sort_by": 5}, "ModelArts.2764"), ({"order": ["asc"]}, "ModelArts.2764"), ({"order": {"a": 1}}, "ModelArts.2764"),
    ({"group_by": {"a": 1}}, "ModelArts.2764"), ({"group_by": ["phase"]}, "ModelArts.2764"),
    ({"workspace_id": ["0"]}, "ModelArts.2764"), ({"workspace_id": {"id": "0"}}, "ModelArts.2764"),
    ({"workspace_id": 0}, "ModelArts.2764"), ({"offset": "1"}, "ModelArts.2764"), ({"offset": 1.5}, "ModelArts.2764"),
    ({"offset": True}, "ModelArts.2764"), ({"limit": [10]}, "ModelArts.2764"),
    ({"offset": 10**9 + 1}, "ModelArts.2764"),
    ({"filters": {"key": "name"}}, "ModelArts.2764"), ({"filters": [["name"]]}, "ModelArts.2764"),
    ({"filters": [{"key": "name", "operator": "like", "value": [{"a": 1}]}]}, "ModelArts.2764"),
    ({"filters": [{"key": "name", "operator": "like", "value": [["a"]]}]}, "ModelArts.2764"),
    ({"filters": [{"key": ["name"], "operator": "like", "value": ["a"]}]}, "ModelArts.2764"),
    ({"filters": [{"key": "name", "operator": "like", "value": ["%" * 40_000]}]}, "ModelArts.2764"),
    ({"filters": [{"key": "name", "operator": "like", "value": ["a\x00b"]}]}, "ModelArts.2764"),
], ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None)
def test_wrong_types_in_a_search(vsdk: Any, raw: httpx.Client, body: dict[str, Any], code: str) -> None:
    r = raw.post("/training-job-searches", json=body)
    assert (r.status_code, r.json()["error_code"]) == (400, code), r.text
    assert "Traceback" not in r.text


def _nested(levels: int) -> Any:
    """A value `levels` containers deep: {"a": {"a": ... "x" ...}}."""
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


DEEP = "__deep__"


@pytest.mark.parametrize("levels", [64, 100, 254, 300, 1000])
def test_over_deep_bodies_are_refused_at_the_boundary(raw: httpx.Client, levels: int) -> None:
    """A body nests at most 64 containers deep (the top-level object is the first): deeper ones get 400
    ModelArts.2787 on every JSON operation, whether the field is stored, echoed or ignored."""
    nested = b'{"a":' * levels + b'"x"' + b"}" * levels  # beyond what json.dumps can write
    for path, method, body in [
        ("/training-jobs", "POST", _with(_set("metadata.labels", DEEP))),
        ("/training-job-searches", "POST", {"group_by": DEEP}),
        ("/training-job-searches", "POST", {"workspace_id": "0", "extra": DEEP}),
        ("/training-jobs/nope", "PUT", {"description": "x", "metadata": DEEP}),
        ("/training-quotas", "PUT", {"quotas": [{"resource": "gpus", "quota": 1, "x": DEEP}]}),
    ]:
        content = json.dumps(body).encode().replace(b'"__deep__"', nested)
        r = raw.request(method, path, content=content, headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()["error_code"]) == (400, "ModelArts.2787"), (levels, path, r.text[:200])
        assert "64" in r.json()["error_msg"]
    _none_created(raw)


def test_nesting_up_to_the_bound_is_accepted(raw: httpx.Client) -> None:
    r = raw.post("/training-job-searches", json={"extra": _nested(63)})  # 64 containers in all
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x07", "\x7f"], ids=["NUL", "ESC", "BEL", "DEL"])
def test_description_is_validated_the_same_on_create_and_update(raw: httpx.Client, vsdk: Any, vserver: Server,
                                                               char: str) -> None:
    text = f"before{char}after"
    created = raw.post("/training-jobs", json=_with(_set("metadata.description", text)))
    updated = raw.put("/training-jobs/nope", json={"description": text})
    for r in (created, updated):
        assert (r.status_code, r.json()["error_code"]) == (400, "ModelArts.2788"), r.text
        assert "description" in r.json()["error_msg"]
    assert created.json()["error_msg"].replace("metadata.", "") == updated.json()["error_msg"]
    too_long = raw.put("/training-jobs/nope", json={"description": "d" * 257})
    assert (too_long.status_code, too_long.json()["error_code"]) == (400, "ModelArts.2788")
    _none_created(raw)


JSON_OPERATIONS = [("POST", "/training-jobs", {"kind": "job"}), ("POST", "/training-job-searches", {}),
                   ("PUT", "/training-jobs/nope", {"description": "x"}),
                   ("POST", "/training-jobs/batch-delete", {"jobs": [{"metadata": {"id": "nope"}}]}),
                   ("POST", "/training-jobs/nope/actions", {"action_type": "terminate"}),
                   ("PUT", "/training-quotas", {"quotas": [{"resource": "gpus", "quota": -1}]})]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml", "json",
                                          "application/jsonx"])
def test_a_body_that_is_not_declared_json_is_refused(raw: httpx.Client, vsdk: Any, vserver: Server,
                                                    content_type: str) -> None:
    for method, path, body in JSON_OPERATIONS:
        r = raw.request(method, path, content=json.dumps(body).encode(), headers={"Content-Type": content_type})
        assert (r.status_code, r.json()["error_code"]) == (415, "ModelArts.2787"), (method, path, r.text)
        assert content_type in r.json()["error_msg"] and "application/json" in r.json()["error_msg"]
    _none_created(raw)


@pytest.mark.parametrize("content_type", ["application/json;charset=UTF-8", "application/json; charset=utf-8",
                                          "Application/JSON", "application/merge-patch+json", None])
def test_json_content_types_and_none_are_accepted(raw: httpx.Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = raw.post("/training-job-searches", content=b'{"limit": 3}', headers=headers)
    assert (r.status_code, r.json()["limit"]) == (200, 3), r.text
    assert raw.post("/training-job-searches", headers={"Content-Type": "text/plain"}).status_code == 200  # no body


def test_405_names_the_allowed_methods(raw: httpx.Client) -> None:
    for method, path, allowed in [("PATCH", "/training-jobs/abc", {"GET", "HEAD", "PUT", "DELETE"}),
                                  ("DELETE", "/training-jobs", {"POST"}),
                                  ("GET", "/training-jobs/abc/actions", {"POST"}),
                                  ("POST", "/training-quotas", {"GET", "HEAD", "PUT"})]:
        r = raw.request(method, path)
        assert (r.status_code, r.json()["error_code"]) == (405, "APIGW.0101"), (method, path)
        assert {m.strip() for m in r.headers["allow"].split(",")} == allowed, (method, path, r.headers)
