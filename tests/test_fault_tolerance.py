"""Fault tolerance through the real server and the official SDK: retries, the recovery ladder, hang
detection, budgets, and kill -9 of the server in the middle of a recovery."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import httpx

from conftest import DEFAULT_CONFIG, Server, job_body, wait_for

TWO_NODES = """
[server]
terminate_grace_seconds = 2
metrics_interval_seconds = 0.5
reconcile_interval_seconds = 0.3

[[nodes]]
name = "node-a"
cpu_cores = 4
memory_gb = 64

[[nodes]]
name = "node-b"
cpu_cores = 4
memory_gb = 64
"""

FAST = DEFAULT_CONFIG.replace("metrics_interval_seconds = 1", "metrics_interval_seconds = 0.5")
FINAL = ("Completed", "Failed", "Terminated", "Abnormal")


def fails_once(marker: Path, code: int = 127, task_index: int = 1, then: str = "sleep 0.3") -> str:
    """Worker `task_index` exits `code` on the first attempt only; the others wait a little. The marker
    lives in the job's home (it outlives an attempt, and a sandboxed worker may write there)."""
    flag = f'"$MA_HOME/.{marker.name}"'
    return (f'if [ "$VC_TASK_INDEX" = {task_index} ] && [ ! -e {flag} ]; then touch {flag}; '
            f'echo "failing on purpose"; exit {code}; fi; sleep 2; {then}')


def create(server: Server, body: dict[str, Any], annotations: dict[str, str]) -> str:
    body["metadata"]["annotations"] = annotations
    r = httpx.post(f"{server.api}/training-jobs", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["metadata"]["id"])


def job(server: Server, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{server.api}/training-jobs/{job_id}", timeout=10).json())


def final(server: Server, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return dict(wait_for(lambda: (j := job(server, job_id))["status"]["phase"] in FINAL and j, timeout=timeout,
                         message="a final phase"))


def counts(doc: dict[str, Any]) -> list[int]:
    return [c for _, c in doc["status"]["node_count_metrics"]]


def test_unconditional_retry_restarts_in_place(make_server: Any, tmp_path: Path, sdk_for: Any) -> None:
    from huaweicloudsdkmodelarts.v1 import CreateTrainingJobRequest, ShowTrainingJobDetailsRequest

    server = make_server()
    client = sdk_for(server)
    body = job_body("uncond", command=fails_once(tmp_path / "m"), node_count=2)
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "3",
                                       "fault-tolerance/job-unconditional-retry": "true"}
    job_id = client.create_training_job(CreateTrainingJobRequest(body=body)).metadata.id
    final(server, job_id)
    doc = client.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=job_id))
    assert doc.status.phase == "Completed"
    first, second = doc.status.running_records
    assert first.end_reason == "exit with 127" and first.end_related_task == "worker-1"
    assert first.end_recover == "proc_restart" and first.end_recover_before_downgrade == "proc_restart"
    assert first.recover_records[0].recover == "proc_restart"
    assert first.recover_records[0].recover_result == "success"
    assert second.start_type == "restarted" and second.end_reason == "job completed"
    assert [t.exit_code for t in doc.status.task_statuses] == [0, 0]
    assert counts(job(server, job_id)) == [2, 0, 2, 0]

    from huaweicloudsdkmodelarts.v1 import ListTrainingJobStagesRequest

    stages = client.list_training_job_stages(ListTrainingJobStagesRequest(training_job_id=job_id))
    assert stages.total_count == 2
    assert [[s.name for s in r.stages] for r in stages.running_records] == [
        ["queuing", "preparing", "running"], ["recovering", "preparing", "running"]]
    assert all(s.end_time for r in stages.running_records for s in r.stages)


def test_user_exit_without_unconditional_fails(server: Server, tmp_path: Path) -> None:
    job_id = create(server, job_body("nouncond", command=fails_once(tmp_path / "m"), node_count=2),
                    {"fault-tolerance/job-retry-num": "3"})
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Failed"
    assert len(doc["status"]["running_records"]) == 1
    assert doc["status"]["running_records"][0]["end_reason"] == "exit with 127"


def test_killed_worker_is_recovered_under_retry_num(make_server: Any, tmp_path: Path) -> None:
    server = make_server(FAST)
    cmd = 'f="$MA_HOME/.second-attempt"; if [ -e "$f" ]; then echo recovered; exit 0; fi; touch "$f"; sleep 600'
    job_id = create(server, job_body("killed", command=cmd), {"fault-tolerance/job-retry-num": "2"})
    marker = server.data_dir / "jobs" / job_id / "home" / "ma-user" / ".second-attempt"
    pid_file = server.data_dir / "jobs" / job_id / "attempts" / "1" / "worker-0" / "worker.pid"
    wait_for(lambda: job(server, job_id)["status"]["phase"] == "Running" and pid_file.exists()
             and pid_file.read_text().strip() and marker.exists(), message="first attempt")
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)  # an outside kill: OOM killer, an operator
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Completed", doc["status"]
    first = doc["status"]["running_records"][0]
    assert first["end_reason"].startswith("exit with 137") and first["end_recover"] == "proc_restart"
    assert doc["status"]["running_records"][1]["start_type"] == "restarted"


def test_hung_worker_is_restarted_in_place(make_server: Any, tmp_path: Path) -> None:
    server = make_server(FAST)
    cmd = 'f="$MA_HOME/.hung-once"; if [ -e "$f" ]; then echo fine now; exit 0; fi; touch "$f"; echo start; sleep 600'
    body = job_body("hang", command=cmd)
    body["algorithm"]["environments"] = {"MA_HANG_DETECT_TIME": "0.05"}  # 3 seconds
    job_id = create(server, body, {"fault-tolerance/hang-retry": "true"})
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Completed", doc["status"]
    first, second = doc["status"]["running_records"]
    assert first["end_reason"].startswith("task hung") and first["end_related_task"] == "worker-0"
    assert first["end_recover"] == "proc_restart" and second["start_type"] == "restarted"
    events = httpx.get(f"{server.api}/training-jobs/{job_id}/events", timeout=10).json()["events"]
    assert any("is hung" in e["message"] for e in events)


def test_hang_without_hang_retry_fails_saying_so(make_server: Any) -> None:
    server = make_server(FAST)
    body = job_body("hang-fail", command="sleep 600")
    body["algorithm"]["environments"] = {"MA_HANG_DETECT_TIME": "0.05"}
    doc = final(server, create(server, body, {}))
    assert doc["status"]["phase"] == "Failed"
    assert "hung" in doc["status"]["running_records"][0]["end_reason"]


def test_budget_exhausted_fails_with_reason(server: Server) -> None:
    job_id = create(server, job_body("budget", command="echo nope; exit 1"),
                    {"fault-tolerance/job-retry-num": "1", "fault-tolerance/job-unconditional-retry": "true"})
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Failed"
    assert len(doc["status"]["running_records"]) == 2
    events = httpx.get(f"{server.api}/training-jobs/{job_id}/events", timeout=10).json()["events"]
    assert any(e["message"].startswith("Job failed: exit with 1; not recovered: the retry budget is exhausted "
                                       "(1 of 1 recoveries used)") for e in events), events


def test_downgrade_path_is_recorded_on_one_node(server: Server) -> None:
    job_id = create(server, job_body("ladder1", command="exit 1"),
                    {"fault-tolerance/job-retry-num": "3", "fault-tolerance/job-unconditional-retry": "true"})
    doc = final(server, job_id)
    records = doc["status"]["running_records"]
    assert [(r.get("end_recover_before_downgrade"), r.get("end_recover")) for r in records] == [
        ("proc_restart", "proc_restart"),
        ("pod_reschedule", "job_reschedule"),  # one node: the pod cannot move
        ("job_reschedule_with_taint", "job_reschedule"),  # fencing the only node would block the job
        (None, None),
    ]
    assert [r["start_type"] for r in records] == ["init_or_rescheduled", "restarted", "init_or_rescheduled",
                                                 "init_or_rescheduled"]


def test_pod_reschedule_moves_the_task_to_another_node(make_server: Any, tmp_path: Path) -> None:
    server = make_server(TWO_NODES)
    counter = '"$MA_HOME/.count"'  # the job's home outlives an attempt (and a pod's move, on one machine)
    cmd = (f'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; '
           f'echo "attempt $n"; if [ $n -le 2 ]; then exit 3; fi')
    job_id = create(server, job_body("ladder2", command=cmd),
                    {"fault-tolerance/job-retry-num": "3", "fault-tolerance/job-unconditional-retry": "true"})
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Completed"
    records = doc["status"]["running_records"]
    assert [r.get("end_recover") for r in records] == ["proc_restart", "pod_reschedule", None]
    assert [r["start_type"] for r in records] == ["init_or_rescheduled", "restarted", "init_or_rescheduled"]
    events = [e["message"] for e in
              httpx.get(f"{server.api}/training-jobs/{job_id}/events", params={"limit": 200}).json()["events"]]
    nodes = [m.split(" on node ")[1].split(" ")[0] for m in events if "started on node" in m]
    assert nodes[0] == nodes[1] and nodes[2] != nodes[1], nodes


def test_kill9_during_recovery_converges(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    server.env = {"OPENARTS_FAULTPOINT": "recovery_begun"}
    server.stop()
    server.start()
    job_id = create(server, job_body("crashy", command=fails_once(tmp_path / "m"), node_count=2),
                    {"fault-tolerance/job-retry-num": "2", "fault-tolerance/job-unconditional-retry": "true"})
    assert server.proc is not None
    server.proc.wait(timeout=30)  # the fault point killed it right after the recovery was recorded
    server.env = None
    server.start()
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Completed"
    records = doc["status"]["running_records"]
    assert len(records) == 2 and records[0]["end_recover"] == "proc_restart"
    assert records[1]["start_type"] == "restarted"
    attempts = sorted(p.name for p in (server.data_dir / "jobs" / job_id / "attempts").iterdir())
    assert attempts == ["1", "2"], "no attempt lost or duplicated"


def stays(predicate: Any, seconds: float) -> bool:
    """True if `predicate` holds at every check over `seconds` (a bounded negative check)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.1)
    return True


def test_terminate_wins_over_recovery(server: Server) -> None:
    job_id = create(server, job_body("term-wins", command="sleep 0.3; exit 1"),
                    {"fault-tolerance/job-retry-num": "100", "fault-tolerance/job-unconditional-retry": "true"})
    wait_for(lambda: len(job(server, job_id)["status"]["running_records"]) >= 3, message="a few recoveries")
    r = httpx.post(f"{server.api}/training-jobs/{job_id}/actions", json={"action_type": "terminate"}, timeout=10)
    assert r.status_code == 202
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Terminated"
    n = len(doc["status"]["running_records"])
    attempts_dir = server.data_dir / "jobs" / job_id / "attempts"
    assert stays(lambda: len(job(server, job_id)["status"]["running_records"]) == n
                 and len(list(attempts_dir.iterdir())) == n, 1.5), "a Terminated job never restarts"


def test_reboot_while_down_is_a_retryable_lost_failure(make_server: Any, tmp_path: Path) -> None:
    import psutil

    server = make_server()
    marker = tmp_path / "rebooted"
    cmd = f'if [ -e "{marker}" ]; then echo back; exit 0; fi; sleep 600'
    job_id = create(server, job_body("reboot", command=cmd), {"fault-tolerance/job-retry-num": "1"})
    pid_file = server.data_dir / "jobs" / job_id / "attempts" / "1" / "worker-0" / "worker.pid"
    wait_for(lambda: job(server, job_id)["status"]["phase"] == "Running" and pid_file.exists()
             and pid_file.read_text().strip(), message="running worker")
    pid = int(pid_file.read_text())
    shim = psutil.Process(pid).parent()
    assert shim is not None
    server.kill9()
    shim.kill()
    shim.wait(5)
    with contextlib.suppress(ProcessLookupError):  # a sandboxed worker dies with its shim (--die-with-parent)
        os.killpg(pid, signal.SIGKILL)  # shim and worker gone, no exit status: what a reboot leaves
    marker.touch()
    server.start()
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Completed"
    first = doc["status"]["running_records"][0]
    assert first["end_reason"] == "task lost", doc["status"]
    assert first["end_recover_before_downgrade"] == "pod_reschedule" and first["end_recover"] == "job_reschedule"


def test_start_interrupted_by_a_crash_reuses_the_attempt_number(make_server: Any) -> None:
    """A crash between opening an attempt and marking it started: the attempt is discarded and the
    same number is used again, so records, schedule_count and directories stay in step."""
    server = make_server()
    server.env = {"OPENARTS_FAULTPOINT": "spawned"}
    server.stop()
    server.start()
    job_id = create(server, job_body("gap", command="echo hi"), {})
    assert server.proc is not None
    server.proc.wait(timeout=30)
    server.env = None
    server.start()
    doc = final(server, job_id)
    assert doc["status"]["phase"] == "Completed"
    assert len(doc["status"]["running_records"]) == 1
    assert [t["schedule_count"] for t in doc["status"]["task_ips"]] == [1]
    assert sorted(p.name for p in (server.data_dir / "jobs" / job_id / "attempts").iterdir()) == ["1"]
