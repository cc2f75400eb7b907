"""kill -9 of the server while jobs run, then a restart: workers are re-adopted, not restarted or
duplicated; exits that happened meanwhile keep their real codes; nothing is orphaned."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import psutil

from conftest import Server, job_body, wait_for


def _create(server: Server, body: dict[str, Any]) -> str:
    r = httpx.post(f"{server.api}/training-jobs", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["metadata"]["id"])


def _job(server: Server, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.api}/training-jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _worker_pids(server: Server, job_id: str, seq: int = 1) -> dict[str, int]:
    base = server.data_dir / "jobs" / job_id / "attempts" / str(seq)
    out = {}
    for d in sorted(base.iterdir()) if base.exists() else []:
        pid_file = d / "worker.pid"
        if pid_file.exists() and pid_file.read_text().strip():
            out[d.name] = int(pid_file.read_text())
    return out


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_members(pgid: int) -> list[int]:
    members = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return members


def _restart(server: Server) -> Server:
    server.start()
    return server


def test_running_workers_are_readopted_not_restarted(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    gate = tmp_path / "gate"
    cmd = f'while [ ! -e "{gate}" ]; do sleep 0.05; done; echo "finished $VC_TASK_INDEX"'
    job_id = _create(server, job_body("readopt", command=cmd, node_count=2))
    wait_for(lambda: _job(server, job_id)["status"]["phase"] == "Running", message="Running")
    pids = wait_for(lambda: (p := _worker_pids(server, job_id)) and len(p) == 2 and p, message="worker pids")

    server.kill9()
    assert all(_alive(pid) for pid in pids.values()), "workers must outlive the server"

    _restart(server)
    job = _job(server, job_id)
    assert job["status"]["phase"] == "Running"
    assert _worker_pids(server, job_id) == pids, "the same workers, not new ones"
    assert not (server.data_dir / "jobs" / job_id / "attempts" / "2").exists()

    gate.touch()
    job = wait_for(lambda: (j := _job(server, job_id))["status"]["phase"] in ("Completed", "Failed") and j,
                   message="completion")
    assert job["status"]["phase"] == "Completed"
    assert [t["exit_code"] for t in job["status"]["task_statuses"]] == [0, 0]
    assert len(job["status"]["running_records"]) == 1
    for pid in pids.values():
        assert not _alive(pid)
        assert _group_members(pid) == []


def test_exit_while_server_down_keeps_real_exit_code(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    gate = tmp_path / "gate"
    cmd = f'while [ ! -e "{gate}" ]; do sleep 0.05; done; echo dying; exit 7'
    job_id = _create(server, job_body("exit-while-down", command=cmd))
    wait_for(lambda: _job(server, job_id)["status"]["phase"] == "Running", message="Running")
    pid = wait_for(lambda: _worker_pids(server, job_id).get("worker-0"), message="worker pid")

    server.kill9()
    gate.touch()
    wait_for(lambda: not _alive(pid), message="worker exit while the server is down")

    _restart(server)
    job = wait_for(lambda: (j := _job(server, job_id))["status"]["phase"] == "Failed" and j, message="Failed")
    status = job["status"]
    assert status["task_statuses"][0]["exit_code"] == 7
    assert "dying" in status["task_statuses"][0]["message"]
    assert status["running_records"][0]["end_reason"] == "exit with 7"
    assert status["running_records"][0]["end_related_task"] == "worker-0"


def test_workers_gone_without_status_are_lost(make_server: Any) -> None:
    """A reboot while the server is down: shim and worker vanish, no exit status was written."""
    server = make_server()
    job_id = _create(server, job_body("lost", command="sleep 600"))
    wait_for(lambda: _job(server, job_id)["status"]["phase"] == "Running", message="Running")
    pid = wait_for(lambda: _worker_pids(server, job_id).get("worker-0"), message="worker pid")
    shim = psutil.Process(pid).parent()
    assert shim is not None

    server.kill9()
    shim.kill()  # the shim first, so that nobody records the worker's exit
    shim.wait(5)
    with contextlib.suppress(ProcessLookupError):  # a sandboxed worker dies with its shim (--die-with-parent)
        os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), message="worker gone")

    _restart(server)
    job = wait_for(lambda: (j := _job(server, job_id))["status"]["phase"] == "Failed" and j, message="Failed")
    assert job["status"]["secondary_phase"] == "Lost"
    assert "lost" in job["status"]["task_statuses"][0]["message"].lower()


def test_terminate_after_restart_stops_readopted_workers(make_server: Any) -> None:
    server = make_server()
    job_id = _create(server, job_body("term-after-restart", command="sleep 600", node_count=2))
    wait_for(lambda: _job(server, job_id)["status"]["phase"] == "Running", message="Running")
    pids = wait_for(lambda: (p := _worker_pids(server, job_id)) and len(p) == 2 and p, message="worker pids")
    server.kill9()
    _restart(server)
    r = httpx.post(f"{server.api}/training-jobs/{job_id}/actions", json={"action_type": "terminate"}, timeout=10)
    assert r.status_code == 202, r.text
    wait_for(lambda: _job(server, job_id)["status"]["phase"] == "Terminated", message="Terminated")
    for pid in pids.values():
        assert not _alive(pid)


def test_graceful_stop_leaves_jobs_running(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    gate = tmp_path / "gate"
    job_id = _create(server, job_body("graceful", command=f'while [ ! -e "{gate}" ]; do sleep 0.05; done'))
    wait_for(lambda: _job(server, job_id)["status"]["phase"] == "Running", message="Running")
    pid = wait_for(lambda: _worker_pids(server, job_id).get("worker-0"), message="worker pid")
    server.stop()  # SIGTERM: a clean shutdown
    assert _alive(pid)
    _restart(server)
    assert _job(server, job_id)["status"]["phase"] == "Running"
    gate.touch()
    wait_for(lambda: _job(server, job_id)["status"]["phase"] == "Completed", message="Completed")
