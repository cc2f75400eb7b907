"""The Ray executor against a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: a
head that runs no work and two nodes with their own custom resources), through the official SDK.

One cluster serves every test of the module; each test gets its own openarts server (its own namespace,
so its own node agents), whose agents are killed when the test ends."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from huaweicloudsdkmodelarts.v1 import ListTrainingJobEventsRequest, StopTrainingJobRequest

from conftest import Server, job_body, sdk_client, wait_for
from helpers import DAEMON, create_id, preview, show, wait_phase
from registry_support import MARKER, PASSWORD, USER, Registry

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

# Node loss seen in about 1.5 s (12 s with Ray's defaults)
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3,
          "health_check_timeout_ms": 300}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": HEALTH})
    c.add_node(num_cpus=2, resources={"node_a": 1})
    c.add_node(num_cpus=2, num_gpus=2, resources={"node_b": 1})  # GPUs in Ray's accounting only
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="openarts-tests", log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _config(cluster: Any, nodes_dir: Path, extra: str = "") -> str:
    return f"""
[server]
terminate_grace_seconds = 3
metrics_interval_seconds = 1
reconcile_interval_seconds = 0.5
executor = "ray"
ray_address = "{cluster.address}"
ray_node_dir = "{nodes_dir}"
{extra}
[[flavors]]
flavor_id = "ray.cpu.1u"
cpu_cores = 1
memory_gb = 1

[[flavors]]
flavor_id = "ray.gpu.1"
cpu_cores = 1
memory_gb = 1
gpus = 1
"""


def _kill_namespace(namespace: str) -> None:
    """The test's node agents, its placement groups and every worker they left."""
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(actor["name"], namespace=namespace))


@pytest.fixture
def ray_server(cluster: Any, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(extra: str = "", data_dir: Path | None = None) -> Server:
        d = data_dir or tmp_path / f"data{len(servers)}"
        d.mkdir(parents=True, exist_ok=True)
        s = Server(d, _config(cluster, tmp_path / "nodes", extra), tmp_path / f"server{len(servers)}.log").start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
    from openarts.config import load_settings
    from openarts.executors.ray import namespace_of

    for d in {s.data_dir for s in servers}:
        _kill_namespace(namespace_of(load_settings(d)))
    for proc in psutil.process_iter(["cmdline"]):  # workers the agents started, should a test fail half-way
        with contextlib.suppress(psutil.Error):
            if any(str(tmp_path / "nodes") in part for part in proc.info["cmdline"] or []):
                proc.kill()


def _reservations(job_id: str) -> list[str]:
    """The job's placement groups that Ray still holds."""
    return [pg["name"] for pg in ray.util.placement_group_table().values()
            if f":{job_id}:" in pg["name"] and pg["state"] != "REMOVED"]


def ray_body(name: str, command: str, node_count: int = 1) -> dict[str, Any]:
    body = job_body(name, command=command, node_count=node_count)
    body["spec"]["resource"]["flavor_id"] = "ray.cpu.1u"
    return body


def _sdk(server: Server) -> Any:
    return sdk_client(server)


def terminate(sdk: Any, job_id: str) -> None:
    sdk.stop_training_job(StopTrainingJobRequest(training_job_id=job_id, body={"action_type": "terminate"}))


def _python(code: str) -> str:
    return f"{sys.executable} -c {shlex.quote(code)}"


# A two-worker rendezvous over TCP: worker-0 listens on MASTER_PORT, worker-1 connects to MASTER_ADDR
RENDEZVOUS = """
import os, socket, sys
rank, addr, port = int(os.environ['RANK']), os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT'])
print('node', os.environ['OPENARTS_NODE'], 'rank', rank, flush=True)
if rank == 0:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', port)); s.listen(1)
    c, _ = s.accept(); print('got', c.recv(100).decode(), flush=True)
else:
    import time
    for _ in range(200):
        try:
            c = socket.create_connection((addr, port)); break
        except OSError:
            time.sleep(0.1)
    c.sendall(b'hello from rank 1'); print('sent', flush=True)
"""


def test_a_job_on_a_ray_node_sees_modelarts_layout_its_data_and_its_outputs_come_back(ray_server: Any) -> None:
    server = ray_server()
    sdk = _sdk(server)
    (server.data_dir / "obs" / "bkt" / "in").mkdir(parents=True)
    (server.data_dir / "obs" / "bkt" / "in" / "d.txt").write_text("staged input\n")
    data = "/home/ma-user/modelarts/inputs/data_url_0/d.txt"
    script = (f"id; pwd; echo HOME=$HOME; cat {data}; cp {data} /home/ma-user/modelarts/outputs/train_url_0/copy.txt; "
              f"cat {server.data_dir}/openarts.db 2>&1; echo ARGS \"$@\"")
    body = ray_body("ray-layout", script)
    body["algorithm"]["inputs"] = [{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/in/"}}}]
    body["algorithm"]["outputs"] = [{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/out/"}}}]
    job_id = create_id(sdk, body)
    job = wait_phase(sdk, job_id, timeout=60)
    log = preview(sdk, job_id).content
    assert job.status.phase == "Completed", log
    assert "uid=1000(ma-user) gid=100(ma-group)" in log
    assert "\n/home/ma-user/modelarts/user-job-dir\n" in log and "HOME=/home/ma-user\n" in log
    assert "staged input" in log
    assert "No such file or directory" in log  # the server's data directory, on a node of the same machine
    assert ("ARGS --data_url=/home/ma-user/modelarts/inputs/data_url_0 "
            "--train_url=/home/ma-user/modelarts/outputs/train_url_0") in log
    assert (server.data_dir / "obs" / "bkt" / "out" / "copy.txt").read_text() == "staged input\n"
    wait_for(lambda: not list((server.data_dir / "jobs" / job_id).glob("attempts/*/workspace.tar")), timeout=10,
             message="the attempt's packed directories removed from the server once it ended")


def test_outputs_go_up_from_a_ray_node_while_the_job_runs_and_at_its_end(ray_server: Any, tmp_path: Path) -> None:
    """The node fetched the attempt's files in its staging (the start only unpacked them); every period
    its agent sends what changed in the task's outputs, and the server uploads it, while the job runs;
    a terminate sends the rest before the job reads Terminated, and the node's files are released."""
    server = ray_server()
    sdk = _sdk(server)
    out = "/home/ma-user/modelarts/outputs/train_url_0"
    body = ray_body("ray-periodic", f"echo one > {out}/a1; sleep 3; echo two > {out}/a2; "
                    f"trap 'echo three > {out}/a3; exit 0' TERM; while true; do sleep 0.1; done; :")
    body["algorithm"]["outputs"] = [{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/periodic/"}},
                                     "period": "1s"}]
    job_id = create_id(sdk, body)
    bucket = server.data_dir / "obs" / "bkt" / "periodic"
    wait_for(lambda: (bucket / "a1").exists(), timeout=60, message="a1 sent while the job runs")
    wait_for(lambda: (bucket / "a2").exists(), timeout=30, message="a2 sent by a later period")
    assert show(sdk, job_id).status.phase == "Running"
    assert len(list((tmp_path / "nodes").glob(f"*/jobs/{job_id}/1/ws.tar"))) == 1  # fetched by its node
    terminate(sdk, job_id)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
    assert [(bucket / n).read_text() for n in ("a1", "a2", "a3")] == ["one\n", "two\n", "three\n"]
    assert not list((tmp_path / "nodes").glob(f"*/jobs/{job_id}"))


def test_a_dataset_crosses_to_a_node_once_and_later_jobs_link_it_from_the_nodes_cache(
        ray_server: Any, s3: Any, tmp_path: Path) -> None:
    """Inputs staged from S3 through the server's cache are left out of the attempt's tar: the node fetches
    each entry its own cache lacks from the server, once; a second job on the same node (a GPU flavor: only
    node_b has GPUs) fetches nothing and links the same read-only entries."""
    import obstore

    from openarts.storage.s3 import S3ObjectStore, S3Options
    from s3_support import ACCESS_KEY, SECRET_KEY

    blob = os.urandom(300_000)
    store = S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY))
    obstore.put(store._store("bkt"), "rayds/a.bin", blob)
    obstore.put(store._store("bkt"), "rayds/sub/b.txt", b"cached input\n")
    server = ray_server(s3.config())
    sdk = _sdk(server)
    data = "/home/ma-user/modelarts/inputs/data_url_0"
    script = f"cat {data}/sub/b.txt; md5sum {data}/a.bin; test -w {data}/a.bin || echo read-only; :"

    def run(name: str) -> tuple[str, list[str]]:
        body = ray_body(name, script)
        body["spec"]["resource"]["flavor_id"] = "ray.gpu.1"
        body["algorithm"]["inputs"] = [{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/rayds/"}}}]
        job_id = create_id(sdk, body)
        job = wait_phase(sdk, job_id, timeout=90)
        log = preview(sdk, job_id).content
        assert job.status.phase == "Completed", log
        events = sdk.list_training_job_events(ListTrainingJobEventsRequest(training_job_id=job_id)).events
        return log, [e.message for e in events]

    digest = hashlib.md5(blob).hexdigest()
    log, events = run("ray-cache-1")
    assert "cached input\n" in log and digest in log and "read-only" in log
    assert any(m.startswith("Inputs on node ") and m.endswith(": 0.3 MB fetched.") for m in events), events
    log, events = run("ray-cache-2")
    assert "cached input\n" in log and digest in log and "read-only" in log
    assert any("(0.0 MB fetched, 0.3 MB from the node's cache)" in m for m in events), events  # the server's
    assert any(m.startswith("Inputs on node ") and m.endswith(": 0.0 MB fetched, 0.3 MB from the node's cache.")
               for m in events), events  # and the node's: nothing crossed to it again
    entries = [p for p in (tmp_path / "nodes").glob("*/cache/*/*/*") if p.is_file()]
    assert sorted(p.stat().st_size for p in entries) == [13, 300_000]
    assert all(not p.stat().st_mode & 0o222 for p in entries)


def test_an_unreachable_cluster_is_one_clear_line_at_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "openarts.cli.main", "serve", "--port", "0", "--data-dir",
                           str(tmp_path / "data"), "--executor", "ray", "--ray-address", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("openarts: cannot reach the Ray cluster at 127.0.0.1:1 ([server] ray_address): "
                                   "Connection refused"), done.stderr


def nodes_in_order(logs: list[str]) -> list[str]:
    return [line.split()[1] for log in logs for line in log.splitlines() if line.startswith("node ")]


def test_a_two_node_job_lands_on_two_nodes_and_its_workers_rendezvous(ray_server: Any, cluster: Any) -> None:
    server = ray_server()
    sdk = _sdk(server)
    job_id = create_id(sdk, ray_body("ray-two", _python(RENDEZVOUS), node_count=2))
    job = wait_phase(sdk, job_id, timeout=90)
    assert job.status.phase == "Completed", (job.status.task_statuses, job.status.running_records)
    logs = [preview(sdk, job_id, f"worker-{i}").content for i in range(2)]
    assert "got hello from rank 1" in logs[0] and "sent" in logs[1], logs
    nodes = {line.split()[1] for log in logs for line in log.splitlines() if line.startswith("node ")}
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0}
    assert len(nodes) == 2 and nodes <= alive  # OPENARTS_NODE: the Ray node ids, two different ones
    addresses = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    assert [t.ip for t in job.status.task_ips] == [addresses[n] for n in nodes_in_order(logs)]
    # no placement group left
    assert not _reservations(job_id)


def test_a_heterogeneous_job_runs_each_role_on_its_node_with_its_own_directories(ray_server: Any) -> None:
    """A learner and an actor (docs/HETEROGENEOUS.md): each on a node of its own, rendezvous over TCP (RANK
    counts the job's tasks), and each role's output channel, at the same container path, goes to its own
    OBS location (every role's directories packed together, each task binding its role's)."""
    server = ray_server()
    sdk = _sdk(server)
    out = "/home/ma-user/modelarts/outputs/train_url_0"

    def role(name: str) -> dict[str, Any]:
        return {"role": name, "algorithm": {
            "command": f"echo {name} > {out}/who.txt && {_python(RENDEZVOUS)}",
            "outputs": [{"name": "train_url", "remote": {"obs": {"obs_url": f"obs://bkt/{name}/"}}}]},
            "task_resource": {"flavor_id": "ray.cpu.1u", "node_count": 1}}
    body = {"kind": "job", "metadata": {"name": "ray-roles"}, "tasks": [role("learner"), role("actor")]}
    job_id = create_id(sdk, body)
    job = wait_phase(sdk, job_id, timeout=90)
    assert job.status.phase == "Completed", (job.status.task_statuses, job.status.running_records)
    assert job.status.tasks == ["learner-0", "actor-0"]
    learner, actor = (preview(sdk, job_id, t).content for t in job.status.tasks)
    assert "got hello from rank 1" in learner and "sent" in actor, (learner, actor)
    nodes = {line.split()[1] for log in (learner, actor) for line in log.splitlines() if line.startswith("node ")}
    assert len(nodes) == 2
    for name in ("learner", "actor"):
        assert (server.data_dir / "obs" / "bkt" / name / "who.txt").read_text() == f"{name}\n"
    assert not _reservations(job_id)


def test_logs_are_read_while_the_job_runs_and_terminate_leaves_nothing(ray_server: Any, tmp_path: Path) -> None:
    server = ray_server()
    sdk = _sdk(server)
    code = "import time\nfor i in range(600):\n    print('tick', i, flush=True); time.sleep(0.2)"
    job_id = create_id(sdk, ray_body("ray-logs", _python(code)))
    wait_phase(sdk, job_id, "Running", timeout=60)
    wait_for(lambda: "tick 3" in preview(sdk, job_id).content, timeout=30, message="the log while it runs")
    assert show(sdk, job_id).status.phase == "Running"
    terminate(sdk, job_id)
    job = wait_phase(sdk, job_id, timeout=60)
    assert job.status.phase == "Terminated"
    wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                          if "tick" in " ".join(p.info["cmdline"] or [])], timeout=20, message="no worker left")
    assert not _reservations(job_id)



TICK = "import time\nfor i in range(3000):\n    print('tick', i, flush=True); time.sleep(0.2)"


def _ticks(sdk: Any, job_id: str, task: str = "worker-0") -> int:
    return preview(sdk, job_id, task).content.count("tick ")


def _run_dir(nodes_dir: Path, job_id: str, seq: int = 1, task: str = "worker-0") -> Path:
    (found,) = list(nodes_dir.glob(f"*/jobs/{job_id}/{seq}/{task}/run"))
    return found


def _started(sdk: Any, job_id: str, ticks: int = 3) -> None:
    wait_phase(sdk, job_id, "Running", timeout=60)
    wait_for(lambda: _ticks(sdk, job_id) >= ticks, timeout=30, message="the job's output")


def _processes_of(nodes_dir: Path, job_id: str) -> list[psutil.Process]:
    """The job's processes on every node: those whose session is a shim's worker there."""
    out = []
    for pid_file in nodes_dir.glob(f"*/jobs/{job_id}/*/*/run/worker.pid"):
        with contextlib.suppress(OSError, ValueError):
            sid = int(pid_file.read_text())
            for proc in psutil.process_iter():
                with contextlib.suppress(psutil.Error, OSError):
                    if os.getsid(proc.pid) == sid:
                        out.append(proc)
    return out


def test_a_worker_killed_from_outside_is_recovered(ray_server: Any, tmp_path: Path) -> None:
    server = ray_server()
    sdk = _sdk(server)
    body = ray_body("ray-killed", _python(TICK))
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "2"}
    job_id = create_id(sdk, body)
    _started(sdk, job_id)
    os.killpg(int((_run_dir(tmp_path / "nodes", job_id) / "worker.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: len(show(sdk, job_id).status.running_records or []) == 2 and
             show(sdk, job_id).status.phase == "Running", timeout=60, message="the second attempt")
    first = show(sdk, job_id).status.running_records[0]
    assert first.end_reason.startswith("exit with 137") and first.end_related_task == "worker-0", first
    wait_for(lambda: _run_dir(tmp_path / "nodes", job_id, 2).exists(), timeout=30, message="attempt 2 on a node")
    terminate(sdk, job_id)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
    wait_for(lambda: not _processes_of(tmp_path / "nodes", job_id), timeout=20, message="no process left")


@pytest.mark.parametrize("restart", [True, False], ids=["restarted-by-ray", "killed-for-good"])
def test_a_killed_agent_comes_back_and_readopts_its_workers(ray_server: Any, tmp_path: Path, restart: bool) -> None:
    """Ray restarts a killed agent; one killed for good (no restart) is replaced by the server. Either way
    the node's workers, which are not the agent's children, run on and are re-adopted."""
    from openarts.config import load_settings
    from openarts.executors.ray import AGENT_PREFIX, namespace_of

    server = ray_server()
    sdk = _sdk(server)
    job_id = create_id(sdk, ray_body("ray-agent", _python(TICK)))
    _started(sdk, job_id)
    run_dir = _run_dir(tmp_path / "nodes", job_id)
    node_prefix = run_dir.parts[-6]
    namespace = namespace_of(load_settings(server.data_dir))
    (name,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
               if a["namespace"] == namespace and a["name"].startswith(AGENT_PREFIX + node_prefix)]
    agent = ray.get_actor(name, namespace=namespace)
    before = ray.get(agent.info.remote())["pid"]
    ray.kill(agent, no_restart=not restart)

    def new_agent_pid() -> int | None:
        with contextlib.suppress(ValueError):  # no actor by that name, for a moment
            return _agent_pid(agent if restart else ray.get_actor(name, namespace=namespace))
        return None

    wait_for(lambda: new_agent_pid() not in (None, before), timeout=60, message="the agent back")
    seen = _ticks(sdk, job_id)
    wait_for(lambda: _ticks(sdk, job_id) > seen + 3, timeout=30, message="the log going on after the restart")
    job = show(sdk, job_id)
    assert job.status.phase == "Running" and len(job.status.running_records) == 1
    terminate(sdk, job_id)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
    wait_for(lambda: not _processes_of(tmp_path / "nodes", job_id), timeout=20, message="no process left")


def _agent_pid(agent: Any) -> int | None:
    try:
        return int(ray.get(agent.info.remote(), timeout=2)["pid"])
    except Exception:
        return None


def test_a_server_killed_and_restarted_readopts_its_ray_job(ray_server: Any, tmp_path: Path) -> None:
    server = ray_server()
    sdk = _sdk(server)
    job_id = create_id(sdk, ray_body("ray-restart", _python(TICK), node_count=2))
    _started(sdk, job_id)
    server.kill9()
    again = ray_server(data_dir=server.data_dir)
    sdk = _sdk(again)
    job = show(sdk, job_id)
    assert job.status.phase == "Running" and len(job.status.running_records) == 1
    seen = _ticks(sdk, job_id, "worker-1")
    wait_for(lambda: _ticks(sdk, job_id, "worker-1") > seen + 3, timeout=30, message="worker-1's log going on")
    terminate(sdk, job_id)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
    wait_for(lambda: not _processes_of(tmp_path / "nodes", job_id), timeout=20, message="no process left")
    assert not _reservations(job_id)


def test_a_daemonized_grandchild_dies_on_terminate(ray_server: Any) -> None:
    server = ray_server()
    sdk = _sdk(server)
    token = f"{86400 + os.getpid() % 1000}.3"
    job_id = create_id(sdk, ray_body("ray-daemon", _python(DAEMON.format(token=token))))
    wait_phase(sdk, job_id, "Running", timeout=60)
    wait_for(lambda: "daemon started" in preview(sdk, job_id).content, timeout=30, message="the job's start")

    def daemon_alive() -> bool:
        return any(p.info["cmdline"] == ["sleep", token] for p in psutil.process_iter(["cmdline"]))

    wait_for(daemon_alive, timeout=10, message="the daemon")
    terminate(sdk, job_id)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
    wait_for(lambda: not daemon_alive(), timeout=10, message="the daemon's end")


def test_a_node_removed_under_a_running_worker_reschedules_the_job(ray_server: Any, cluster: Any,
                                                                  tmp_path: Path) -> None:
    server = ray_server()
    sdk = _sdk(server)
    code = "import os\nprint('node', os.environ['OPENARTS_NODE'], flush=True)\n" + TICK
    body = ray_body("ray-node-lost", _python(code))
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "2"}
    job_id = create_id(sdk, body)
    _started(sdk, job_id)
    first_node = next(line.split()[1] for line in preview(sdk, job_id).content.splitlines()
                      if line.startswith("node "))
    (victim,) = [n for n in cluster.list_all_nodes() if n.node_id == first_node]
    cluster.remove_node(victim)
    try:
        wait_for(lambda: len(show(sdk, job_id).status.running_records or []) == 2 and
                 show(sdk, job_id).status.phase == "Running", timeout=90, message="the job on another node")
        records = show(sdk, job_id).status.running_records
        assert records[0].end_reason == "task lost" and records[0].end_related_task == "worker-0", records
        events = sdk.list_training_job_events(ListTrainingJobEventsRequest(training_job_id=job_id)).events
        assert any(f"its node {first_node} left the Ray cluster" in e.message for e in events)
        wait_for(lambda: "node " in preview(sdk, job_id).content, timeout=30, message="attempt 2's output")
        second = next(line.split()[1] for line in preview(sdk, job_id).content.splitlines()
                      if line.startswith("node "))
        assert second != first_node
        terminate(sdk, job_id)
        assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
    finally:
        cluster.add_node(num_cpus=2, resources={"node_c": 1})
        cluster.wait_for_nodes()


@ray.remote(num_cpus=0, num_gpus=1)
class GpuHolder:
    """Other Ray work on the cluster, holding one GPU."""

    def ids(self) -> list[int]:
        return [int(g) for g in ray.get_gpu_ids()]


def test_a_gpu_worker_gets_the_gpu_ray_reserved_for_it(ray_server: Any) -> None:
    holder = GpuHolder.remote()  # type: ignore[attr-defined]
    try:
        assert ray.get(holder.ids.remote(), timeout=60) == [0]  # Ray's GPU 0 of node_b is taken
        server = ray_server()
        sdk = _sdk(server)
        body = ray_body("ray-gpu", "echo GPUS=$MA_NUM_GPUS CUDA=$CUDA_VISIBLE_DEVICES NODE=$OPENARTS_NODE")
        body["spec"]["resource"]["flavor_id"] = "ray.gpu.1"
        job_id = create_id(sdk, body)
        job = wait_phase(sdk, job_id, timeout=90)
        log = preview(sdk, job_id).content
        assert job.status.phase == "Completed", log
        assert "GPUS=1 CUDA=0 " in log  # in the sandbox its one GPU is device 0
        # openarts' own choice would have been GPU 0; the worker got (and the task records) Ray's: 1
        with sqlite3.connect(server.data_dir / "openarts.db") as db:
            assert db.execute("SELECT gpus FROM tasks WHERE job_id = ?", (job_id,)).fetchall() == [("1",)]
    finally:
        ray.kill(holder)


def test_a_reservation_no_attempt_owns_is_removed_at_start(ray_server: Any) -> None:
    """A placement group of this server's namespace that no open attempt owns (left by a server that died
    between reserving and recording, or by a data directory that was replaced) is gone before it serves."""
    from ray.util.placement_group import placement_group

    leaked = placement_group([{"CPU": 0.01}], name="openarts-tests:0b0e5f3c-leaked:3", lifetime="detached")
    ray.get(leaked.ready(), timeout=30)
    ray_server('ray_namespace = "openarts-tests"')
    assert _reservations("0b0e5f3c-leaked") == []


def test_a_custom_image_job_runs_on_a_ray_node_in_its_image(ray_server: Any, registry: tuple[Registry, str],
                                                             tmp_path: Path) -> None:
    """The server pulls the image (the nodes need no registry access, skopeo or umoci); each node's agent
    fetches it from the server once, by digest, and runs the worker in it at ModelArts' paths."""
    reg, image = registry
    server = ray_server(f"""
[[registries]]
host = "{reg.host}"
username = "{USER}"
password = "{PASSWORD}"
insecure = true
""")
    sdk = _sdk(server)
    body = ray_body("ray-image", "cat /MARKER; id; pwd; echo IMAGE_VAR=$IMAGE_VAR NODE=$OPENARTS_NODE; "
                                 "ls /usr/bin/python3 2>&1; true", node_count=2)
    body["algorithm"]["engine"] = {"image_url": image}
    job_id = create_id(sdk, body)
    job = wait_phase(sdk, job_id, timeout=90)
    logs = [preview(sdk, job_id, task).content for task in ("worker-0", "worker-1")]
    assert job.status.phase == "Completed", logs
    for log in logs:
        assert MARKER in log and "IMAGE_VAR=from-image" in log
        assert "uid=1000(ma-user) gid=100(ma-group)" in log
        assert "\n/home/ma-user/modelarts/user-job-dir\n" in log
        assert "/usr/bin/python3: No such file or directory" in log  # the image's files, not the node's
    assert len({log.split("NODE=")[1].split()[0] for log in logs}) == 2
    digest = image_digest(server)
    fetched = list((tmp_path / "nodes").glob(f"*/images/bundles/{digest}/rootfs/MARKER"))
    assert len(fetched) == 2, fetched  # one copy per node
    wait_for(lambda: not list((server.data_dir / "jobs" / job_id).glob("attempts/*/image.tar")), timeout=10,
             message="the attempt's link to the image removed once it ended")


def image_digest(server: Server) -> str:
    (bundle,) = (server.data_dir / "images" / "bundles").iterdir()
    return bundle.name


def test_a_large_log_arrives_whole_in_several_reads(ray_server: Any) -> None:
    """9 MiB of output is more than one read of an agent returns (4 MiB): the server's copy is still the
    whole log, byte for byte, once the task's end is recorded."""
    server = ray_server()
    sdk = _sdk(server)
    job_id = create_id(sdk, ray_body("ray-big-log", _python(
        "import sys\nfor i in range(9):\n    sys.stdout.write(str(i) * (1 << 20))\n")))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    (log,) = (server.data_dir / "jobs" / job_id / "attempts").glob("*/worker-0/log")
    assert log.read_bytes() == b"".join(str(i).encode() * (1 << 20) for i in range(9))

