"""Heterogeneous jobs (tasks[]) through the official SDK against a real server: a learner (1 node) and
actors (2 nodes), each role with its own code, parameters and flavor, finding each other over TCP; one
actor's failure recovered per the job's policy, the records naming the actor; the document's tasks[] and
task names; logs and metrics per task; gang placement; the create rules."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import huaweicloudsdkmodelarts.v1.model as m

from conftest import PROJECT, Server, job_body, wait_for
from helpers import create_id, expect_error, preview, show, show_json, wait_phase

ENV_KEYS = ("MA_TASK_NAME", "VC_TASK_INDEX", "MA_NUM_HOSTS", "VC_LEARNER_NUM", "VC_ACTOR_NUM", "VC_LEARNER_HOSTS",
            "VC_ACTOR_HOSTS", "RANK", "WORLD_SIZE")
SHOW_ENV = f'''
import os, sys
print("env " + " ".join(k + "=" + os.environ.get(k, "-") for k in {ENV_KEYS!r}), flush=True)
print("args " + " ".join(sys.argv[1:]), flush=True)
'''
LEARNER = SHOW_ENV + textwrap.dedent('''
    import socket
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    server = socket.create_server(("", int(os.environ["MASTER_PORT"])))
    server.settimeout(60)
    heard = []
    while len(heard) < int(os.environ["VC_ACTOR_NUM"]):
        conn, _ = server.accept()
        with conn:
            heard.append(conn.recv(64).decode())
            conn.sendall(b"ok")
    print("learner heard " + ",".join(sorted(heard)), flush=True)
    with open(os.path.join(args["train_url"], "heard.txt"), "w") as f:
        f.write(",".join(sorted(heard)))
''')
ACTOR = SHOW_ENV + textwrap.dedent('''
    import socket, time
    me = os.environ["MA_TASK_NAME"] + "-" + os.environ["VC_TASK_INDEX"]
    marker = os.path.join(os.environ["HOME"], ".failed-" + me)
    if me == os.environ.get("FAIL_TASK") and not os.path.exists(marker):
        open(marker, "w").close()
        print("failing on purpose", flush=True)
        sys.exit(3)
    deadline = time.time() + 60
    while True:
        try:
            conn = socket.create_connection((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    conn.sendall(me.encode())
    assert conn.recv(2) == b"ok"
    print("actor " + me + " reached the learner", flush=True)
''')
SMALL = """
[server]
terminate_grace_seconds = 2
metrics_interval_seconds = 0.5
reconcile_interval_seconds = 0.3

[[nodes]]
name = "local"
cpu_cores = 4
memory_gb = 128
"""
FLAVOR_1U = "modelarts.local.cpu.1u"
FLAVOR_2U = "modelarts.local.cpu.2u"


def _code(tmp_path: Path) -> tuple[Path, Path]:
    learner, actor = tmp_path / "learner", tmp_path / "actor"
    for d, text in ((learner, LEARNER), (actor, ACTOR)):
        d.mkdir()
        (d / "main.py").write_text(text)
    return learner, actor


def _body(name: str, learner: Path, actor: Path, fail_task: str = "", out: str = "obs://bucket/hetero/out/",
          actors: int = 2) -> Any:
    """The job as the SDK's models build it: tasks[] of Task, no spec."""
    learner_role = m.Task(
        role="learner",
        algorithm=m.TaskAlgorithm(
            code_dir=str(learner), boot_file="main.py",
            job_config=m.TaskAlgorithmJobConfig(parameters=[m.Parameter(name="lr", value="0.1")]),
            outputs=[m.TaskAlgorithmOutputs(name="train_url", remote=m.TaskAlgorithmRemote(
                obs=m.TaskAlgorithmRemoteObs(obs_url=out)))]),
        task_resource=m.TaskTaskResource(flavor_id=FLAVOR_2U, node_count=1))
    actor_role = m.Task(
        role="actor",
        algorithm=m.TaskAlgorithm(code_dir=str(actor), boot_file=f"{actor}/main.py",
                                  environments={"FAIL_TASK": fail_task or "none"}),
        task_resource=m.TaskTaskResource(flavor_id=FLAVOR_1U, node_count=actors))
    annotations = {"fault-tolerance/job-retry-num": "1", "fault-tolerance/job-unconditional-retry": "true"}
    return m.Job(kind="job", metadata=m.JobMetadata(name=name, annotations=annotations),
                 tasks=[learner_role, actor_role])


def _env_line(sdk: Any, job_id: str, task: str) -> dict[str, str]:
    content = preview(sdk, job_id, task).content
    line = next(s for s in content.splitlines() if s.startswith("env "))
    return dict(kv.split("=", 1) for kv in line[4:].split())


def test_learner_and_actors_find_each_other_and_an_actor_failure_is_recovered(server: Server, sdk: Any,
                                                                              tmp_path: Path) -> None:
    learner, actor = _code(tmp_path)
    job_id = create_id(sdk, _body("rl-job", learner, actor, fail_task="actor-1"))
    job = wait_phase(sdk, job_id, timeout=90)
    assert job.status.phase == "Completed", show_json(sdk, job_id)["status"]
    doc = show_json(sdk, job_id)  # every value typed as the SDK's models declare
    status = doc["status"]
    assert status["tasks"] == ["learner-0", "actor-0", "actor-1"]
    assert [(t["task"], t.get("exit_code")) for t in status["task_statuses"]] == [
        ("learner-0", 0), ("actor-0", 0), ("actor-1", 0)]
    assert sorted(t["task"] for t in status["task_ips"]) == ["actor-0", "actor-1", "learner-0"]
    first, second = status["running_records"]
    assert first["end_reason"] == "exit with 3" and first["end_related_task"] == "actor-1"
    assert first["recover_records"][0]["related_task"] == "actor-1"
    assert first["recover_records"][0]["recover_result"] == "success"
    assert second["end_reason"] == "job completed"
    assert [c for _, c in status["node_count_metrics"]] == [3, 0, 3, 0]

    # the document: tasks[] in place of algorithm and spec, each role with its own code and flavor
    assert "spec" not in doc and "algorithm" not in doc
    roles = {t["role"]: t for t in doc["tasks"]}
    assert list(roles) == ["learner", "actor"]
    assert roles["learner"]["task_resource"]["flavor_id"] == FLAVOR_2U
    assert roles["actor"]["task_resource"]["flavor_id"] == FLAVOR_1U
    assert roles["learner"]["algorithm"]["boot_file"] == f"{learner}/main.py"
    assert roles["actor"]["algorithm"]["boot_file"] == f"{actor}/main.py"
    assert roles["actor"]["algorithm"]["environments"] == {"FAIL_TASK": "actor-1"}
    assert roles["learner"]["algorithm"]["outputs"]["remote"]["obs"]["obs_url"] == "obs://bucket/hetero/out/"
    sdk_doc = show(sdk, job_id)
    assert [t.role for t in sdk_doc.tasks] == ["learner", "actor"]

    # each role's environment, and the learner's parameters (job_config) as arguments
    env = {task: _env_line(sdk, job_id, task) for task in status["tasks"]}
    assert env["learner-0"] | {"VC_ACTOR_HOSTS": "", "VC_LEARNER_HOSTS": ""} == {
        "MA_TASK_NAME": "learner", "VC_TASK_INDEX": "0", "MA_NUM_HOSTS": "1", "VC_LEARNER_NUM": "1",
        "VC_ACTOR_NUM": "2", "RANK": "0", "WORLD_SIZE": "3", "VC_ACTOR_HOSTS": "", "VC_LEARNER_HOSTS": ""}
    assert len(env["learner-0"]["VC_ACTOR_HOSTS"].split(",")) == 2
    assert (env["actor-1"]["MA_TASK_NAME"], env["actor-1"]["VC_TASK_INDEX"], env["actor-1"]["MA_NUM_HOSTS"],
            env["actor-1"]["RANK"]) == ("actor", "1", "2", "2")
    learner_log = preview(sdk, job_id, "learner-0").content
    assert "args --lr=0.1 --train_url=" in learner_log
    assert "learner heard actor-0,actor-1" in learner_log
    assert "actor actor-1 reached the learner" in preview(sdk, job_id, "actor-1").content
    assert "--lr" not in preview(sdk, job_id, "actor-0").content  # the learner's parameters are its own
    assert (server.data_dir / "obs" / "bucket" / "hetero" / "out" / "heard.txt").read_text() == "actor-0,actor-1"

    # the first attempt's log of the actor that failed, by its own name
    old = httpx.get(f"{server.api}/training-jobs/{job_id}/tasks/actor-1/logs/preview", params={"attempt": "1"},
                    timeout=10)
    assert old.status_code == 200 and "failing on purpose" in old.json()["content"]

    # metrics per task; a task the job does not have is refused
    from huaweicloudsdkmodelarts.v1 import ShowTrainingJobMetricsRequest
    metrics = sdk.show_training_job_metrics(ShowTrainingJobMetricsRequest(training_job_id=job_id, task_id="actor-1"))
    assert metrics.status_code == 200
    for task in ("worker-0", "actor-2", "learner-1"):
        expect_error(lambda task=task: sdk.show_training_job_metrics(ShowTrainingJobMetricsRequest(
            training_job_id=job_id, task_id=task)), 400, "ModelArts.2775")


def test_the_whole_job_waits_until_every_role_fits(make_server: Any, sdk_for: Any, tmp_path: Path) -> None:
    """Gang placement across roles: 2 + 2 cores do not fit beside a job holding 2 of the 4; none of its
    tasks starts until all can, and then all do."""
    server = make_server(SMALL)
    sdk = sdk_for(server)
    learner, actor = _code(tmp_path)
    holder = create_id(sdk, job_body("holder", command="sleep 60", node_count=2))
    wait_phase(sdk, holder, "Running")
    job_id = create_id(sdk, _body("gang", learner, actor))
    events = f"{server.api}/training-jobs/{job_id}/events"
    wait_for(lambda: any("insufficient resources" in e["message"] for e in httpx.get(events, timeout=10).json()[
        "events"]), timeout=30, message="the job waits for resources")
    pending = show_json(sdk, job_id)["status"]
    assert pending["tasks"] == ["learner-0", "actor-0", "actor-1"]
    assert "task_ips" not in pending  # nothing of it placed
    with httpx.Client(base_url=server.url, timeout=10) as console:  # the console's queue shows each role
        queue = console.get(f"/console/{PROJECT}/queue").text
        assert f"learner: {FLAVOR_2U} x 1, actor: {FLAVOR_1U} x 2" in queue
    from huaweicloudsdkmodelarts.v1 import DeleteTrainingJobRequest
    sdk.delete_training_job(DeleteTrainingJobRequest(training_job_id=holder))
    job = wait_phase(sdk, job_id, timeout=60)
    assert job.status.phase == "Completed", show_json(sdk, job_id)["status"]
    with httpx.Client(base_url=server.url, timeout=10) as console:  # its page and its row in the list
        page = console.get(f"/console/{PROJECT}/jobs/{job_id}").text
        assert "<dt>Role learner</dt>" in page and "tasks actor-0, actor-1" in page
        rows = console.get(f"/console/{PROJECT}/jobs").text
        assert f"learner: {FLAVOR_2U}, actor: {FLAVOR_1U}" in rows


def _post(server: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.api}/training-jobs", json=body, timeout=10)


def _raw(name: str, learner: Path, actor: Path) -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": name}, "tasks": [
        {"role": "learner", "algorithm": {"code_dir": str(learner), "boot_file": "main.py"},
         "task_resource": {"flavor_id": FLAVOR_1U, "node_count": 1}},
        {"role": "actor", "algorithm": {"code_dir": str(actor), "boot_file": "main.py"},
         "task_resource": {"flavor_id": FLAVOR_1U, "node_count": 2}}]}


def test_create_rules(server: Server, tmp_path: Path) -> None:
    learner, actor = _code(tmp_path)
    cases: list[tuple[str, Any, str, str]] = [
        ("spec and tasks", lambda b: b.update(spec={"resource": {"flavor_id": FLAVOR_1U}}), "ModelArts.2788",
         "use either spec or tasks"),
        ("a role twice", lambda b: b["tasks"][1].update(role="learner"), "ModelArts.2788", "tasks[1].role"),
        ("a bad role name", lambda b: b["tasks"][0].update(role="Learner 1"), "ModelArts.2788", "tasks[0].role"),
        ("no task_resource", lambda b: b["tasks"][1].pop("task_resource"), "ModelArts.2788",
         "tasks[1].task_resource"),
        ("an unknown flavor", lambda b: b["tasks"][1]["task_resource"].update(flavor_id="nope"), "ModelArts.2781",
         "tasks[1]"),
        ("a bad node_count", lambda b: b["tasks"][1]["task_resource"].update(node_count=0), "ModelArts.2788",
         "tasks[1].task_resource.node_count"),
        ("a relative code_dir", lambda b: b["tasks"][0]["algorithm"].update(code_dir="code"), "ModelArts.2757",
         "tasks[0].algorithm.code_dir"),
        ("an algorithm beside tasks", lambda b: b.update(algorithm={"command": "true"}), "ModelArts.2788",
         "tasks[].algorithm"),
        ("a search with tasks", lambda b: b.update(kind="autosearch_job"), "ModelArts.2788", "kind"),
        ("parameters twice", lambda b: b["tasks"][0]["algorithm"].update(
            parameters=[{"name": "a", "value": "1"}], job_config={"parameters": [{"name": "a", "value": "2"}]}),
         "ModelArts.2788", "tasks[0].algorithm.job_config.parameters"),
        ("a search policy in a role", lambda b: b["tasks"][0]["algorithm"].update(policies={"auto_search": {}}),
         "ModelArts.2788", "tasks[0].algorithm.policies"),
        ("more than fits", lambda b: [t["task_resource"].update(node_count=15) for t in b["tasks"]],
         "ModelArts.2793", "15 x modelarts.local.cpu.1u + 15 x modelarts.local.cpu.1u"),
    ]
    for what, change, code, fragment in cases:
        body = _raw("rules", learner, actor)
        change(body)
        r = _post(server, body)
        assert r.status_code == 400, (what, r.text)
        assert r.json()["error_code"] == code, (what, r.text)
        assert fragment in r.json()["error_msg"], (what, r.text)
    listed = httpx.post(f"{server.url}/v2/{PROJECT}/training-job-searches", json={}, timeout=10).json()
    assert listed["total"] == 0  # nothing was made
