"""Scheduling through the real server: priorities, reservation and backfill, gang placement,
preemption and resumption, priority changes, affinity on virtual nodes, quotas, auto_stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from conftest import Server, wait_for

BASE = """
[server]
terminate_grace_seconds = 1
reconcile_interval_seconds = 0.3

[[flavors]]
flavor_id = "t.1u"
cpu_cores = 1
memory_gb = 1

[[flavors]]
flavor_id = "t.2u"
cpu_cores = 2
memory_gb = 1
"""


def nodes(*specs: tuple[str, int, str]) -> str:
    out = BASE
    for name, cores, group in specs:
        out += f'\n[[nodes]]\nname = "{name}"\ncpu_cores = {cores}\nmemory_gb = 64\n'
        if group:
            out += f'labels = {{ hyperinstance = "{group}" }}\n'
    return out


class Api:
    def __init__(self, server: Server) -> None:
        self.c = httpx.Client(base_url=server.api, timeout=10)
        self.data_dir = server.data_dir

    def create(self, name: str, command: str, flavor: str = "t.1u", n: int = 1, priority: int = 1,
               preemptible: bool = False, outputs: list[dict[str, Any]] | None = None, **spec: Any) -> str:
        body = {"kind": "job", "metadata": {"name": name},
                "algorithm": {"command": command, **({"outputs": outputs} if outputs else {})},
                "spec": {"resource": {"flavor_id": flavor, "node_count": n},
                         "schedule_policy": {"priority": priority, "preemptible": preemptible}, **spec}}
        r = self.c.post("/training-jobs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["metadata"]["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.c.get(f"/training-jobs/{job_id}").json())

    def phase(self, job_id: str) -> str:
        return str(self.job(job_id)["status"]["phase"])

    def events(self, job_id: str) -> list[str]:
        return [e["message"] for e in self.c.get(f"/training-jobs/{job_id}/events", params={"limit": 500}).json()
                ["events"]]

    def nodes_of(self, job_id: str) -> list[str]:
        return [m.split(" on node ")[1].split(" ")[0] for m in self.events(job_id) if " started on node " in m]


def gate(tmp: Path, name: str) -> tuple[Path, str]:
    g = tmp / name
    return g, f'while [ ! -e "{g}" ]; do sleep 0.05; done'


def test_priority_order(make_server: Any, tmp_path: Path) -> None:
    api = Api(make_server(nodes(("n1", 1, ""))))
    g, hold = gate(tmp_path, "g")
    holder = api.create("holder", hold)
    wait_for(lambda: api.phase(holder) == "Running", message="holder running")
    low = api.create("low", "true", priority=1)
    high = api.create("high", "true", priority=3)
    wait_for(lambda: api.job(high)["status"]["secondary_phase"] == "Queuing", message="queued")
    g.touch()
    wait_for(lambda: api.phase(low) == "Completed" and api.phase(high) == "Completed", message="both done")
    assert api.job(high)["status"]["start_time"] <= api.job(low)["status"]["start_time"]


def test_reservation_backfill_and_gang(make_server: Any, tmp_path: Path) -> None:
    api = Api(make_server(nodes(("n1", 2, ""), ("n2", 2, ""), ("n3", 1, ""))))
    ga, hold_a = gate(tmp_path, "a")
    gb, hold_big = gate(tmp_path, "big")
    a = api.create("a", hold_a)  # first fit: one core of n1
    wait_for(lambda: api.phase(a) == "Running", message="a running")
    assert api.nodes_of(a) == ["n1"]
    big = api.create("big", hold_big, flavor="t.2u", n=2)  # needs n1 and n2 whole: waits, reserved
    wait_for(lambda: any("insufficient resources" in e for e in api.events(big)), message="big waiting")
    assert api.c.get(f"/training-jobs/{big}/tasks").json() == [], "a waiting gang holds nothing"
    small = api.create("small", "true")  # backfills on n3, the one node big has no use for
    wait_for(lambda: api.phase(small) == "Completed", message="small backfilled")
    assert api.nodes_of(small) == ["n3"]
    ga.touch()
    wait_for(lambda: api.phase(big) == "Running", message="big starts when a ends")
    assert sorted(api.nodes_of(big)) == ["n1", "n2"]
    gb.touch()
    wait_for(lambda: api.phase(big) == "Completed", message="big completes")


def test_backfill_never_delays_the_reserved_head(make_server: Any, tmp_path: Path) -> None:
    api = Api(make_server(nodes(("n1", 2, ""))))
    ga, hold_a = gate(tmp_path, "a")
    a = api.create("a", hold_a)
    wait_for(lambda: api.phase(a) == "Running", message="a running")
    big = api.create("big", "true", flavor="t.2u")
    small = api.create("small", "sleep 600")  # would fit in the free core, but big waits for it
    wait_for(lambda: any("queued behind job" in e for e in api.events(small)), message="small held back")
    assert api.phase(small) == "Pending"
    ga.touch()
    wait_for(lambda: api.phase(big) == "Completed", message="big ran first")
    wait_for(lambda: api.phase(small) == "Running", message="small after big")
    api.c.post(f"/training-jobs/{small}/actions", json={"action_type": "terminate"})


def test_preemption_and_resumption(make_server: Any, tmp_path: Path) -> None:
    api = Api(make_server(nodes(("n1", 2, ""))))
    marker = tmp_path / "resumed"
    # a checkpoint it writes before it is preempted reaches the object store (outputs go up at every end)
    low = api.create("low", f'if [ -e "{marker}" ]; then echo resumed; exit 0; fi; '
                     f'echo step-1 > "${{1#--train_url=}}/ckpt"; sleep 600; :', n=2, preemptible=True,
                     outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/preempted/"}},
                               "mode": "upload_on_exit"}])
    wait_for(lambda: api.phase(low) == "Running", message="low running")
    gh, hold_high = gate(tmp_path, "high")
    high = api.create("high", hold_high, flavor="t.2u", priority=3)
    wait_for(lambda: api.phase(high) == "Running", message="high preempted its way in")
    low_doc = api.job(low)
    assert low_doc["status"]["phase"] == "Pending"
    assert low_doc["status"]["running_records"][0]["end_reason"] == f"preempted by job {high}"
    assert any("Preempted by higher-priority job" in e for e in api.events(low))
    assert (api.data_dir / "obs" / "bkt" / "preempted" / "ckpt").read_text() == "step-1\n"
    assert any(e.startswith("Output train_url: uploaded") for e in api.events(low))
    marker.touch()
    gh.touch()
    wait_for(lambda: api.phase(low) == "Completed", message="low resumed and completed")
    records = api.job(low)["status"]["running_records"]
    assert len(records) == 2 and records[1]["end_reason"] == "job completed"
    assert [c for _, c in api.job(low)["status"]["node_count_metrics"]] == [2, 0, 2, 0]


def test_non_preemptible_job_is_left_alone(make_server: Any, tmp_path: Path) -> None:
    api = Api(make_server(nodes(("n1", 2, ""))))
    gl, hold_low = gate(tmp_path, "low")
    low = api.create("keep", hold_low, n=2, preemptible=False)
    wait_for(lambda: api.phase(low) == "Running", message="low running")
    high = api.create("high", "true", flavor="t.2u", priority=3)
    wait_for(lambda: any("insufficient resources" in e for e in api.events(high)), message="high waits")
    assert api.phase(low) == "Running" and api.phase(high) == "Pending"
    gl.touch()
    wait_for(lambda: api.phase(high) == "Completed", message="high after low")
    assert len(api.job(low)["status"]["running_records"]) == 1


def test_priority_change_of_a_pending_job(make_server: Any, tmp_path: Path, sdk_for: Any) -> None:
    from huaweicloudsdkmodelarts.v1 import ChangeTrainingJobDescriptionRequest

    server = make_server(nodes(("n1", 1, "")))
    api = Api(server)
    g, hold = gate(tmp_path, "g")
    holder = api.create("holder", hold)
    wait_for(lambda: api.phase(holder) == "Running", message="holder running")
    first = api.create("first", "true")
    second = api.create("second", "true")
    body = {"spec": {"schedule_policy": {"priority": 3}}}
    sdk_for(server).change_training_job_description(
        ChangeTrainingJobDescriptionRequest(training_job_id=second, body=body))
    assert api.job(second)["spec"]["schedule_policy"]["priority"] == 3
    g.touch()
    wait_for(lambda: api.phase(first) == "Completed" and api.phase(second) == "Completed", message="both done")
    assert api.job(second)["status"]["start_time"] <= api.job(first)["status"]["start_time"]
    r = api.c.put(f"/training-jobs/{first}", json={"spec": {"schedule_policy": {"priority": 2}}})
    assert r.status_code == 409 and r.json()["error_code"] == "ModelArts.2878"


def test_hyperinstance_groups_and_never_satisfiable(make_server: Any) -> None:
    api = Api(make_server(nodes(("a1", 2, "sn-a"), ("a2", 2, "sn-a"), ("b1", 2, "sn-b"), ("b2", 2, "sn-b"))))
    affinity = {"required_affinity": {"affinity_type": "hyperinstance", "affinity_group_size": 2}}
    job_id = api.create("grouped", "true", flavor="t.2u", n=4, schedule_policy={"priority": 1, **affinity})
    wait_for(lambda: api.phase(job_id) == "Completed", message="grouped job done")
    placed = api.nodes_of(job_id)
    assert len(placed) == 4 and {p[0] for p in placed[:2]} in ({"a"}, {"b"}) and {p[0] for p in placed[2:]} in (
        {"a"}, {"b"})
    too_big = {"required_affinity": {"affinity_type": "hyperinstance", "affinity_group_size": 4}}
    body = {"kind": "job", "metadata": {"name": "never"}, "algorithm": {"command": "true"},
            "spec": {"resource": {"flavor_id": "t.2u", "node_count": 4}, "schedule_policy": too_big}}
    r = api.c.post("/training-jobs", json=body)
    assert r.status_code == 400 and r.json()["error_code"] == "ModelArts.2793"
    assert "never be satisfied" in r.json()["error_msg"]


def test_quota_holds_jobs_back(make_server: Any, tmp_path: Path) -> None:
    api = Api(make_server(nodes(("n1", 4, ""))))
    r = api.c.put("/training-quotas", json={"quotas": [{"resource": "running_jobs", "quota": 1}]})
    assert r.status_code == 200, r.text
    g, hold = gate(tmp_path, "g")
    one = api.create("one", hold)
    two = api.create("two", "true")
    wait_for(lambda: any("project quota" in e for e in api.events(two)), message="two held by quota")
    quotas = {q["resource"]: q for q in api.c.get("/training-quotas").json()["quotas"]}
    assert quotas["running_jobs"]["quota"] == 1 and quotas["running_jobs"]["used"] == 1
    assert api.phase(two) == "Pending" and api.phase(one) == "Running"
    g.touch()
    wait_for(lambda: api.phase(two) == "Completed", message="two after one")


def test_auto_stop(make_server: Any) -> None:
    api = Api(make_server(nodes(("n1", 2, ""))))
    job_id = api.create("limited", "sleep 600", auto_stop={"time_unit": "SECONDS", "duration": 1})
    wait_for(lambda: api.phase(job_id) == "Terminated", message="auto stopped")
    record = api.job(job_id)["status"]["running_records"][0]
    assert record["end_reason"].startswith("auto stopped: ran longer than 1 s")
