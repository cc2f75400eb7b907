"""Every worker in its own sandbox (executors/sandbox.py), end to end through a real server and the SDK:
ModelArts' paths for real, nothing of the server's files, its own PID namespace, the host network."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    DeleteTrainingJobRequest,
    ListTrainingJobEventsRequest,
    ShowTrainingJobDetailsRequest,
    ShowTrainingJobLogsPreviewRequest,
    StopTrainingJobRequest,
)

from conftest import Server, job_body, sdk_client, wait_for
from helpers import DAEMON, create_id, show_json, wait_phase

PY = sys.executable


def terminate(sdk: Any, job_id: str) -> None:
    sdk.stop_training_job(StopTrainingJobRequest(training_job_id=job_id, body={"action_type": "terminate"}))


def _log(sdk: Any, job_id: str, task: str = "worker-0") -> str:
    """The task's log so far ("" before it has one: the preview answers 204)."""
    resp = sdk.show_training_job_logs_preview(ShowTrainingJobLogsPreviewRequest(training_job_id=job_id, task_id=task))
    return str(resp.content or "") if resp.status_code == 200 else ""


def _python(code: str) -> str:
    return f"{shlex.quote(PY)} -c {shlex.quote(code)}"


def test_job_sees_modelarts_layout_and_its_data(server: Server, sdk: Any) -> None:
    (server.data_dir / "obs" / "bkt" / "in").mkdir(parents=True)
    (server.data_dir / "obs" / "bkt" / "in" / "d.txt").write_text("staged input\n")
    script = ("id; pwd; echo HOME=$HOME; echo WORKSPACE=$WORKSPACE; echo MA_INPUTS=$MA_INPUTS; "
              "echo NODE=$OPENARTS_NODE; "
              "cat /home/ma-user/modelarts/inputs/data_url_0/d.txt; "
              "cp /home/ma-user/modelarts/inputs/data_url_0/d.txt "
              "/home/ma-user/modelarts/outputs/train_url_0/copy.txt; "
              "echo written >/home/ma-user/modelarts/outputs/train_url_0/new.txt; echo ARGS \"$@\"")
    body = job_body("sandbox-layout", command=script,
                    inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/in/"}}}],
                    outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/out/"}}}])
    job_id = create_id(sdk, body)
    job = wait_phase(sdk, job_id)
    log = _log(sdk, job_id)
    assert job.status.phase == "Completed", log
    assert "uid=1000(ma-user) gid=100(ma-group)" in log
    assert "\n/home/ma-user/modelarts/user-job-dir\n" in log  # the working directory
    assert "HOME=/home/ma-user\n" in log
    assert "NODE=local\n" in log  # the configured node it runs on
    assert "WORKSPACE=/home/ma-user/modelarts/user-job-dir\n" in log
    assert '"local_dir": "/home/ma-user/modelarts/inputs/data_url_0"' in log
    assert "staged input" in log
    assert ("ARGS --data_url=/home/ma-user/modelarts/inputs/data_url_0 "
            "--train_url=/home/ma-user/modelarts/outputs/train_url_0") in log
    out = server.data_dir / "obs" / "bkt" / "out"
    assert (out / "copy.txt").read_text() == "staged input\n"
    assert (out / "new.txt").read_text() == "written\n"
    doc = show_json(sdk, job_id)
    algo = doc["algorithm"]
    assert algo["inputs"][0]["local_dir"] == "/home/ma-user/modelarts/inputs/data_url_0"
    assert algo["outputs"][0]["local_dir"] == "/home/ma-user/modelarts/outputs/train_url_0"
    assert algo["working_dir"] == "/home/ma-user/modelarts/user-job-dir"
    assert str(server.data_dir) not in json.dumps(doc)


def test_job_cannot_reach_server_files_other_jobs_or_processes(server: Server, sdk: Any) -> None:
    first = create_id(sdk, job_body("sandbox-victim", command="echo secret-of-victim > $HOME/secret.txt"))
    assert wait_phase(sdk, first).status.phase == "Completed"
    victim = server.data_dir / "jobs" / first / "home" / "ma-user" / "secret.txt"
    assert victim.read_text() == "secret-of-victim\n"  # it is there, on the host
    keys = server.data_dir / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "master.key").write_text("not-really-a-key\n")
    os.chmod(keys / "master.key", 0o600)
    targets = [server.data_dir / "openarts.db", server.data_dir / "security.db", keys / "master.key",
               server.data_dir / "config.toml", victim, server.data_dir / "jobs" / first,
               server.data_dir / "jobs"]
    checks = "; ".join(f"cat {shlex.quote(str(t))} 2>&1 | head -c 200; echo; ls {shlex.quote(str(t))} 2>&1 | head -1"
                       for t in targets)
    server_pid = server.proc.pid if server.proc else 0
    # the data directory lies under pytest's directory, which the tests' config shows to workers read-only
    # (conftest.with_test_files_visible): what hides it is a mount the worker cannot remove
    unmount = f"umount {shlex.quote(str(server.data_dir))} 2>&1; umount -l {shlex.quote(str(server.data_dir))} 2>&1"
    script = (f"{unmount}; {checks}; cat /etc/shadow 2>&1; echo PROCS $(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '); "
              f"kill -0 {server_pid} 2>&1 && echo SIGNALLED-THE-SERVER; "
              "echo FDS $(ls /proc/self/fd | tr '\\n' ' '); touch /usr/x 2>&1; touch /tmp/private && echo TMP-OK")
    job_id = create_id(sdk, job_body("sandbox-attacker", command=script))
    job = wait_phase(sdk, job_id)
    log = _log(sdk, job_id)
    assert job.status.phase == "Completed", log
    assert "secret-of-victim" not in log and "not-really-a-key" not in log and "SQLite" not in log
    assert "cat: /etc/shadow: Permission denied" in log and "root:" not in log
    for t in targets:
        lines = [line for line in log.splitlines() if str(t) in line]
        assert lines, f"{t}: no attempt in the log:\n{log}"
        assert all("No such file" in line or "Permission denied" in line for line in lines), (t, lines)
    procs = [int(p) for p in log.split("PROCS", 1)[1].splitlines()[0].split()]
    assert max(procs) < 100, procs  # its own PID namespace: a handful of small pids
    assert "SIGNALLED-THE-SERVER" not in log
    assert "FDS 0 1 2 3\n" in log  # ls's own directory is 3: nothing of the server's or the shim's
    assert "Read-only file system" in log and "TMP-OK" in log
    assert not (server.data_dir / "jobs" / job_id / "tmp").exists()


def _daemon_alive(token: str) -> bool:
    return any(proc.info["cmdline"] == ["sleep", token] for proc in psutil.process_iter(["cmdline"]))


@pytest.mark.parametrize("how", ["terminate", "delete"])
def test_daemonized_grandchild_is_gone(server: Server, sdk: Any, how: str) -> None:
    token = f"{86400 + os.getpid() % 1000}.{1 if how == 'terminate' else 2}"
    job_id = create_id(sdk, job_body(f"sandbox-daemon-{how}", command=_python(DAEMON.format(token=token))))
    wait_for(lambda: "daemon started" in _log(sdk, job_id), timeout=30, message="the job's start")
    wait_for(lambda: _daemon_alive(token), timeout=10, message="the daemon")
    if how == "terminate":
        terminate(sdk, job_id)
        assert wait_phase(sdk, job_id).status.phase == "Terminated"
    else:
        sdk.delete_training_job(DeleteTrainingJobRequest(training_job_id=job_id))

        def gone() -> bool:
            try:
                sdk.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=job_id))
            except ClientRequestException:
                return True
            return False

        wait_for(gone, timeout=30, message="the job's deletion")
    wait_for(lambda: not _daemon_alive(token), timeout=10, message="the daemon's end")


RENDEZVOUS = """
import os, socket, time
rank, addr, port = int(os.environ["RANK"]), os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
if rank == 0:
    s = socket.create_server((addr, port))
    conn, _ = s.accept()
    print("rank 0 got:", conn.recv(100).decode(), flush=True)
else:
    for _ in range(200):
        try:
            c = socket.create_connection((addr, port), timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    c.sendall(b"hello from rank 1")
    print("rank 1 sent", flush=True)
"""


def test_two_workers_rendezvous_over_tcp(server: Server, sdk: Any) -> None:
    job_id = create_id(sdk, job_body("sandbox-rendezvous", command=_python(RENDEZVOUS), node_count=2))
    job = wait_phase(sdk, job_id, timeout=60)
    assert job.status.phase == "Completed", _log(sdk, job_id)
    assert "rank 0 got: hello from rank 1" in _log(sdk, job_id, "worker-0")
    assert "rank 1 sent" in _log(sdk, job_id, "worker-1")


GRACEFUL = """
import signal, sys, time
def stop(*_):
    time.sleep(1)  # a checkpoint being saved: the sandbox waits for it (within the grace period)
    print("checkpoint saved after SIGTERM", flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
print("up", flush=True)
time.sleep(600)
"""


def test_readoption_after_server_kill9(make_server: Callable[..., Server], tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(GRACEFUL)
    server = make_server()
    sdk = sdk_client(server)
    job_id = create_id(sdk, job_body("sandbox-readopt", code_dir=f"file://{code}", boot_file="train.py"))
    wait_for(lambda: "up" in _log(sdk, job_id), timeout=30, message="the job's start")
    server.kill9()
    again = make_server(data_dir=server.data_dir)
    sdk = sdk_client(again)
    assert wait_phase(sdk, job_id, "Running").status.phase == "Running"
    terminate(sdk, job_id)
    job = wait_phase(sdk, job_id)
    assert job.status.phase == "Terminated"
    # SIGTERM went through the sandbox's init to the worker, which finished on its own terms
    assert "checkpoint saved after SIGTERM" in _log(sdk, job_id)
    assert job.status.task_statuses[0].exit_code == 7
    assert show_json(sdk, job_id)["algorithm"]["local_code_dir"] == "/home/ma-user/modelarts/user-job-dir/code"


def test_sandbox_off_runs_on_the_host(make_server: Callable[..., Server]) -> None:
    from conftest import DEFAULT_CONFIG

    server = make_server(DEFAULT_CONFIG.replace("[server]\n", '[server]\nsandbox = "off"\n'))
    sdk = sdk_client(server)
    job_id = create_id(sdk, job_body("no-sandbox", command="pwd; echo HOME=$HOME"))
    assert wait_phase(sdk, job_id).status.phase == "Completed"
    log = _log(sdk, job_id)
    assert f"HOME={server.data_dir}/jobs/{job_id}/home/ma-user" in log
    assert show_json(sdk, job_id)["algorithm"]["working_dir"].startswith(str(server.data_dir))


def test_links_a_job_makes_are_never_followed_by_the_server(server: Server, sdk: Any) -> None:
    """The server (often root) copies a job's outputs out: a job that turned its output directory into a
    link to / or put links to host files in it gets nothing of the host into the object store."""
    out = "/home/ma-user/modelarts/outputs"
    script = (f"rm -rf {out}/a_0 && ln -s / {out}/a_0; "
              f"ln -s /etc/passwd {out}/b_0/passwd; ln -s /etc {out}/b_0/etc; echo mine > {out}/b_0/own.txt; "
              "echo done")
    body = job_body("sandbox-links", command=script,
                    outputs=[{"name": "a", "remote": {"obs": {"obs_url": "obs://bkt/a/"}}},
                             {"name": "b", "remote": {"obs": {"obs_url": "obs://bkt/b/"}}}])
    job_id = create_id(sdk, body)
    assert wait_phase(sdk, job_id).status.phase == "Completed", _log(sdk, job_id)
    obs = server.data_dir / "obs" / "bkt"
    assert not (obs / "a").exists()
    assert sorted(p.name for p in (obs / "b").rglob("*")) == ["own.txt"]
    events = [e.message for e in sdk.list_training_job_events(
        ListTrainingJobEventsRequest(training_job_id=job_id)).events]
    assert f"Output a: not uploaded: {out}/a_0 is a symbolic link." in events, events


def test_job_environment_reaches_only_the_worker(server: Server, sdk: Any) -> None:
    """bwrap, setsid and the shim run outside the sandbox as the server's user: a job's LD_PRELOAD,
    LD_LIBRARY_PATH or PATH must not reach them (a preloaded library there would run as the server)."""
    body = job_body("sandbox-env", command="echo LIB=$LD_LIBRARY_PATH MINE=$MINE; sleep 600")
    body["algorithm"]["environments"] = {"LD_LIBRARY_PATH": "/nowhere", "MINE": "job-value"}
    job_id = create_id(sdk, body)
    wait_for(lambda: "MINE=job-value" in _log(sdk, job_id), timeout=30, message="the job's start")
    assert "LIB=/nowhere" in _log(sdk, job_id)
    pid_file = server.data_dir / "jobs" / job_id / "attempts" / "1" / "worker-0" / "worker.pid"
    bwrap = psutil.Process(int(pid_file.read_text()))
    assert bwrap.name() == "bwrap"
    outside = bwrap.environ()
    assert "MINE" not in outside and "LD_LIBRARY_PATH" not in outside, outside
    assert "job-value" not in " ".join(bwrap.cmdline())  # nor on a command line anyone may read
    terminate(sdk, job_id)
    assert wait_phase(sdk, job_id).status.phase == "Terminated"


def test_local_code_dir_must_come_from_a_directory_workers_may_read(server: Server, sdk: Any) -> None:
    """The server copies a local code_dir into the job: in the sandbox only from `sandbox_read_only`
    directories (here the test's own, conftest.with_test_files_visible), never /etc or the data dir."""
    for i, code_dir in enumerate(("/etc", str(server.data_dir / "jobs"))):
        job_id = create_id(sdk, job_body(f"sandbox-code-{i}", command="ls", code_dir=code_dir))
        job = wait_phase(sdk, job_id)
        assert (job.status.phase, job.status.secondary_phase) == ("Abnormal", "CreateFailed")
        message = job.status.task_statuses[0].message
        assert "sandbox_read_only" in message or "server's own files" in message, message
