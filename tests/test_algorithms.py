"""Algorithms through the official SDK against a real server: create, list, show, change, delete, each
response checked against its SDK model; jobs made from an algorithm (algorithm.id) with their own
parameters, checked against the algorithm's constraints; an algorithm in use kept until its jobs end; a
published version run by subscription; the `openarts algorithms` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import huaweicloudsdkmodelarts.v1.model as m

from conftest import PROJECT, Server, job_body, wait_for
from helpers import create_id, expect_error, is_uuid, preview, show_json, wait_phase
from sdk_types import checked_response as _checked

TRAIN_PY = textwrap.dedent('''
    import os, sys, time
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    print("args=" + " ".join(f"{k}={v}" for k, v in sorted(args.items())))
    gate = args.get("gate")
    deadline = time.time() + 60
    while gate and gate != "none" and not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.05)
    print("data=" + open(os.path.join(args["data_url"], "x.txt")).read().strip())
''')



def _param(name: str, value: str, kind: str = "String", required: bool = False, editable: bool = True,
           valid_type: str = "None", valid_range: list[str] | None = None) -> Any:
    return m.Parameters(name=name, value=value, description=f"the {name}", constraint=m.ParametersConstraint(
        type=kind, editable=editable, required=required, valid_type=valid_type, valid_range=valid_range or []))


def _algorithm(code: Path, name: str = "algo-train") -> Any:
    return m.Algorithm(
        metadata=m.AlgorithmMetadata(name=name, description="trains on x"),
        job_config=m.AlgorithmJobConfig(
            code_dir=str(code), boot_file="train.py",
            parameters=[_param("epochs", "3", "Integer", valid_type="Range", valid_range=["1", "10"]),
                        _param("mode", "fast", valid_type="Choice", valid_range=["fast", "slow"]),
                        _param("seed", "42", "Integer", editable=False),
                        _param("tag", "", required=True),
                        _param("gate", "none")],
            inputs=[m.AlgorithmCreateInput(name="data_url", description="the data")],
            outputs=[m.AlgorithmCreateOutput(name="train_url")]),
        resource_requirements=[m.ResourceRequirement(key="flavor_type", values=["CPU"], operator="in")])


def _code(tmp_path: Path, server: Server) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(TRAIN_PY)
    data = server.data_dir / "obs" / "bucket" / "data" / "x.txt"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("hello\n")
    return code


def _job(name: str, algorithm: dict[str, Any], **params: str) -> dict[str, Any]:
    algo = {**algorithm, "parameters": [{"name": k, "value": v} for k, v in params.items()],
            "inputs": [{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bucket/data/"}}}],
            "outputs": [{"name": "train_url", "remote": {"obs": {"obs_url": f"obs://bucket/out/{name}/"}}}]}
    return job_body(name, **algo)


def _create_job(sdk: Any, body: dict[str, Any]) -> str:
    return create_id(sdk, body)


def _refused(sdk: Any, body: dict[str, Any], code: str, *fragments: str) -> None:
    exc = expect_error(lambda: sdk.create_training_job(m.CreateTrainingJobRequest(body=body)), 400, code)
    for fragment in fragments:
        assert fragment in exc.error_msg, exc.error_msg


def test_algorithm_crud_jobs_constraints_and_deletion(sdk: Any, server: Server, tmp_path: Path) -> None:
    code = _code(tmp_path, server)
    created = _checked("create_algorithm", sdk.create_algorithm(m.CreateAlgorithmRequest(body=_algorithm(code))), 201)
    meta, jc = created["metadata"], created["job_config"]
    algorithm_id = meta["id"]
    assert is_uuid(algorithm_id) and meta["name"] == "algo-train" and meta["version_num"] == 0
    assert jc["boot_file"] == "train.py" and jc["code_dir"] == str(code)
    assert [p["name"] for p in jc["parameters"]] == ["epochs", "mode", "seed", "tag", "gate"]
    assert jc["parameters"][0]["constraint"] == {"type": "Integer", "editable": True, "required": False,
                                                 "sensitive": False, "valid_type": "Range",
                                                 "valid_range": ["1", "10"]}
    assert created["resource_requirements"] == [{"key": "flavor_type", "value": ["CPU"], "operator": "in"}]
    shown = _checked("show_algorithm_by_uuid",
                     sdk.show_algorithm_by_uuid(m.ShowAlgorithmByUuidRequest(algorithm_id=algorithm_id)))
    assert shown == created
    expect_error(lambda: sdk.create_algorithm(m.CreateAlgorithmRequest(body=_algorithm(code))), 400, "ModelArts.2751")
    listed = _checked("list_algorithms", sdk.list_algorithms(m.ListAlgorithmsRequest()))
    assert (listed["total"], listed["count"]) == (1, 1) and listed["items"][0] == created
    expect_error(lambda: sdk.show_algorithm_by_uuid(m.ShowAlgorithmByUuidRequest(algorithm_id="nope")), 400,
                 "ModelArts.2755")

    # a default out of its own constraint is refused at create
    bad = _algorithm(code, "algo-bad")
    bad.job_config.parameters[0].value = "11"
    expect_error(lambda: sdk.create_algorithm(m.CreateAlgorithmRequest(body=bad)), 400, "ModelArts.2788")

    ref = {"id": algorithm_id}
    # constraint violations
    _refused(sdk, _job("bad-seed", ref, tag="t", seed="7"), "ModelArts.2788", "'seed'", "not editable")
    _refused(sdk, _job("bad-tag", ref), "ModelArts.2788", "'tag'", "required")
    _refused(sdk, _job("bad-epochs", ref, tag="t", epochs="11"), "ModelArts.2788", "'epochs'", "range")
    _refused(sdk, _job("bad-type", ref, tag="t", epochs="two"), "ModelArts.2788", "'epochs'", "Integer")
    _refused(sdk, _job("bad-choice", ref, tag="t", mode="medium"), "ModelArts.2788", "'mode'")
    _refused(sdk, _job("bad-extra", ref, tag="t", other="1"), "ModelArts.2788", "'other'")
    _refused(sdk, _job("bad-id", {"id": "f" * 36}, tag="t"), "ModelArts.2755")
    _refused(sdk, _job("bad-code", {**ref, "command": "true"}, tag="t"), "ModelArts.2788", "algorithm.command")
    no_input = _job("no-input", ref, tag="t")
    no_input["algorithm"]["inputs"] = []
    _refused(sdk, no_input, "ModelArts.2753", "data_url")

    gate = tmp_path / "gate"
    first = _create_job(sdk, _job("from-algo-1", ref, tag="one", epochs="5", gate=str(gate)))
    second = _create_job(sdk, _job("from-algo-2", ref, tag="two", mode="slow", seed="42"))
    wait_phase(sdk, first, "Running")
    # in use: refused while a job made from it has not ended
    exc = expect_error(lambda: sdk.delete_algorithm(m.DeleteAlgorithmRequest(algorithm_id=algorithm_id)), 409,
                       "ModelArts.0409")
    assert "from-algo-1" in exc.error_msg
    # a change moves no existing job
    change = m.Algorithm(metadata=m.AlgorithmMetadata(name="algo-renamed", description="changed"))
    changed = _checked("change_algorithm", sdk.change_algorithm(m.ChangeAlgorithmRequest(algorithm_id=algorithm_id,
                                                                                          body=change)))
    assert changed["metadata"]["name"] == "algo-renamed" and changed["job_config"] == jc
    gate.touch()
    for job_id, expected in ((first, "args=data_url=/home/ma-user/modelarts/inputs/data_url_0 epochs=5 gate="
                              f"{gate} mode=fast seed=42 tag=one"), (second, "mode=slow seed=42 tag=two")):
        job = wait_phase(sdk, job_id)
        log = preview(sdk, job_id).content
        assert job.status.phase == "Completed", log
        assert expected.split(" ", 1)[1] in log and "data=hello" in log, log
    doc = show_json(sdk, first)
    assert doc["algorithm"]["id"] == algorithm_id and doc["algorithm"]["name"] == "algo-train"
    assert doc["algorithm"]["boot_file"] == "train.py"
    assert {p["name"]: p["value"] for p in doc["algorithm"]["parameters"]} == \
        {"epochs": "5", "mode": "fast", "seed": "42", "tag": "one", "gate": str(gate)}
    assert _checked("delete_algorithm", sdk.delete_algorithm(m.DeleteAlgorithmRequest(algorithm_id=algorithm_id)),
                    204) == {}
    expect_error(lambda: sdk.delete_algorithm(m.DeleteAlgorithmRequest(algorithm_id=algorithm_id)), 400,
                 "ModelArts.2755")
    assert show_json(sdk, second)["algorithm"]["id"] == algorithm_id  # the job keeps what it resolved


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARTS_") and k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "openarts.cli.main", "algorithms", *args, "--server", server.url,
                           "--project", PROJECT], capture_output=True, text=True, timeout=90, env=env, check=False)


def test_cli_and_a_subscribed_version(sdk: Any, server: Server, tmp_path: Path) -> None:
    code = _code(tmp_path, server)
    body: dict[str, Any] = {"metadata": {"name": "algo-cli"},
                            "job_config": {
                                "code_dir": str(code), "boot_file": "train.py",
                                "parameters": [{"name": "tag", "value": "v1", "constraint": {"editable": False}}],
                                "inputs": [{"name": "data_url",  # a default location (openarts' extension)
                                            "remote": {"obs": {"obs_url": "obs://bucket/data/"}}}]}}
    path = tmp_path / "algo.json"
    path.write_text(json.dumps(body))
    made = cli(server, "create", str(path))
    assert made.returncode == 0, made.stderr
    algorithm_id = made.stdout.strip()
    assert is_uuid(algorithm_id)
    listed = cli(server, "list")
    assert listed.returncode == 0 and "algo-cli" in listed.stdout, listed.stderr
    got = cli(server, "get", algorithm_id, "--json")
    assert json.loads(got.stdout)["job_config"]["parameters"][0]["value"] == "v1"
    published = cli(server, "publish", algorithm_id, "--json")
    assert published.returncode == 0, published.stderr
    version = json.loads(published.stdout)
    assert version["version_num"] == 1 and is_uuid(version["subscription_id"]) and is_uuid(version["item_version_id"])

    # the algorithm changes after publication: the version keeps v1
    body["job_config"]["parameters"][0]["value"] = "v2"
    path.write_text(json.dumps(body))
    assert cli(server, "change", algorithm_id, str(path)).returncode == 0
    sub = {"subscription_id": version["subscription_id"], "item_version_id": version["item_version_id"]}
    job_id = create_id(sdk, job_body("from-version", **sub))
    direct = create_id(sdk, job_body("from-current", id=algorithm_id))
    for jid, tag in ((job_id, "tag=v1"), (direct, "tag=v2")):
        job = wait_phase(sdk, jid)
        log = preview(sdk, jid).content
        assert job.status.phase == "Completed" and tag in log and "data=hello" in log, log
    doc = show_json(sdk, job_id)
    assert (doc["algorithm"]["subscription_id"], doc["algorithm"]["item_version_id"], doc["algorithm"]["name"]) == \
        (sub["subscription_id"], sub["item_version_id"], "algo-cli")
    unknown = {"subscription_id": version["subscription_id"], "item_version_id": "0" * 36}
    _refused(sdk, job_body("bad-version", **unknown), "ModelArts.2755")
    _refused(sdk, job_body("half-version", subscription_id=version["subscription_id"]), "ModelArts.2755")

    wait_for(lambda: cli(server, "delete", algorithm_id).returncode == 0, message="algorithm deleted")
    assert cli(server, "get", algorithm_id).returncode != 0
    refused = cli(server, "delete", algorithm_id)
    assert refused.returncode != 0 and "ModelArts.2755" in refused.stderr + refused.stdout
    # a published version outlives its algorithm
    assert create_id(sdk, job_body("after-delete", **sub))
