"""What a flavor enforces (docs/FLAVORS.md): memory-limit detection and its classification, thread
variables, which nodes' cores are real, and CPU pinning by the local executor (real processes)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openarts.core.faults import Capabilities, FaultPolicy, RecoveryState, plan_recovery, retryable
from openarts.core.phases import Phase, Secondary
from openarts.core.reasons import EndKind, Termination, oom_reason, outcome
from openarts.core.resources import Node, assign_cpus, build_catalog
from openarts.executors.agent import NodeAgent, over_limit
from openarts.executors.base import TaskLaunch
from openarts.executors.local import LocalExecutor
from openarts.service.document import flavor_info
from openarts.supervisor.decide import Act, TaskView, decide_attempt, termination_of
from openarts.supervisor.workspace import THREAD_VARIABLES, thread_variables

MiB = 2**20


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def never() -> int:
    raise AssertionError("PSS is read only when the summed RSS is over the limit and there are several processes")


# -- detection ---------------------------------------------------------------------------------------

def test_under_or_at_the_limit_is_fine_and_reads_no_pss() -> None:
    assert over_limit(10 * MiB, 64 * MiB, 3, never) is None
    assert over_limit(64 * MiB, 64 * MiB, 3, never) is None  # at the limit is not over it


def test_one_process_over_the_limit_by_rss() -> None:
    assert over_limit(65 * MiB, 64 * MiB, 1, never) == 65 * MiB


def test_several_processes_are_judged_by_pss_which_counts_shared_pages_once() -> None:
    # forked workers sharing 50 MiB: RSS sums to 100 MiB, their PSS to 55 MiB
    assert over_limit(100 * MiB, 64 * MiB, 2, lambda: 55 * MiB) is None
    assert over_limit(100 * MiB, 64 * MiB, 2, lambda: 90 * MiB) == 90 * MiB


def test_no_memory_in_the_flavor_means_no_limit() -> None:
    assert over_limit(10**12, 0, 1, never) is None


def test_reason_names_use_and_limit() -> None:
    assert oom_reason(812 * MiB + 5, 512) == "out of memory: 812 MiB used, flavor limit 512 MiB"


# -- classification ----------------------------------------------------------------------------------

def test_an_oom_killed_task_ends_the_attempt_as_out_of_memory() -> None:
    reason = oom_reason(100 * MiB, 64)
    d = decide_attempt([TaskView("worker-0", 0, 137, 2000, oom_ms=1900, oom_reason=reason)], 2100, 1000, None)
    assert d.act is Act.FINISH and d.termination is not None
    assert d.termination == Termination(EndKind.OOM, reason, "worker-0", 137)
    assert outcome(d.termination) == (Phase.FAILED, Secondary.FAILED)


def test_the_oom_task_is_the_first_failure_even_when_a_peer_exit_is_seen_in_the_same_pass() -> None:
    # worker-1 was killed at 1900; worker-0 lost its peer and exited 1; both exits recorded at 2000
    tasks = [TaskView("worker-0", 0, 1, 2000), TaskView("worker-1", 1, 137, 2000, oom_ms=1900, oom_reason="out")]
    t = termination_of(min(tasks, key=lambda v: (v.oom_ms or v.end_ms, v.idx)))
    d = decide_attempt(tasks, 2100, 1000, None)
    assert d.termination == t and t.kind is EndKind.OOM and t.related_task == "worker-1"


def test_a_live_task_marked_oom_stops_the_others() -> None:
    tasks = [TaskView("worker-0", 0, None, 0, oom_ms=1900), TaskView("worker-1", 1, None, 0)]
    assert decide_attempt(tasks, 2000, 1000, None).act is Act.STOP_OTHERS


def test_an_exit_0_that_beat_the_kill_is_a_completion() -> None:
    d = decide_attempt([TaskView("worker-0", 0, 0, 2000, oom_ms=1990, oom_reason="x")], 2100, 1000, None)
    assert d.termination is not None and d.termination.kind is EndKind.COMPLETED


def test_out_of_memory_is_retried_only_unconditionally() -> None:
    oom = Termination(EndKind.OOM, oom_reason(100 * MiB, 64), "worker-0", 137)
    cap = Capabilities(other_node=False, uses_gpus=False)
    assert not retryable(oom, FaultPolicy())
    assert not retryable(oom, FaultPolicy(retry_num=3))
    assert plan_recovery(oom, FaultPolicy(retry_num=3), RecoveryState(), cap, False) is None
    rec = plan_recovery(oom, FaultPolicy(retry_num=3, unconditional=True), RecoveryState(), cap, False)
    assert rec is not None and rec.tier == "proc_restart" and rec.fault_scenario == "oom"


# -- flavors, nodes, environment ---------------------------------------------------------------------

def test_a_configured_flavor_may_have_a_fraction_of_a_gb() -> None:
    catalog = build_catalog({"flavors": [{"flavor_id": "tiny", "cpu_cores": 0.5, "memory_gb": 0.0625},
                                         {"flavor_id": "big", "cpu_cores": 2, "memory_gb": 8}]}, gpus=[])
    tiny, big = catalog.flavors["tiny"], catalog.flavors["big"]
    assert (tiny.memory_mb, tiny.threads) == (64, 1)
    assert (big.memory_mb, big.threads) == (8192, 2)
    # the flavor list's memory size is an integer: MB below a whole GB, GB otherwise
    assert flavor_info(tiny, 1)["memory"] == {"size": 64, "unit": "MB"}
    assert flavor_info(big, 1)["memory"] == {"size": 8, "unit": "GB"}


def test_nodes_get_real_cpus_only_when_their_cores_fit_the_machine() -> None:
    def nodes(*cores: float) -> list[Node]:
        return [Node(f"n{i}", round(c * 1000), 1024) for i, c in enumerate(cores)]

    usable = [2, 3, 5, 7]
    assert [n.cpus for n in assign_cpus(nodes(1, 3), usable)] == [(2,), (3, 5, 7)]
    assert [n.cpus for n in assign_cpus(nodes(4), usable)] == [(2, 3, 5, 7)]
    assert [n.cpus for n in assign_cpus(nodes(2, 3), usable)] == [(), ()]  # 5 virtual cores on 4
    assert [n.cpus for n in assign_cpus(nodes(64), usable)] == [()]
    assert [n.cpus for n in assign_cpus(nodes(1.5), usable)] == [()]  # a fraction of a core is not real


def test_the_default_node_is_the_machine() -> None:
    node = build_catalog({}, gpus=[]).nodes[0]
    usable = sorted(os.sched_getaffinity(0))
    assert node.cpus == (tuple(usable) if node.cpu_milli // 1000 <= len(usable) else ())


def test_thread_variables_follow_the_flavor_unless_the_job_sets_them() -> None:
    assert thread_variables(2, {}) == {name: "2" for name in THREAD_VARIABLES}
    chosen = thread_variables(1, {"OMP_NUM_THREADS": "8", "OTHER": "x"})
    assert "OMP_NUM_THREADS" not in chosen and chosen["MKL_NUM_THREADS"] == "1"
    assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS"} <= set(THREAD_VARIABLES)


# -- pinning by the local executor ---------------------------------------------------------------------

def _run_affinity_probe(tmp_path: Path, cpus: tuple[int, ...]) -> set[int]:
    """Start a task that prints its own and its child's affinity; returns the set both report."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    executor = NodeAgent()
    probe = ("import os, subprocess, sys; print(sorted(os.sched_getaffinity(0))); sys.stdout.flush(); "
             "subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'])")
    launch = TaskLaunch("job", 1, "worker-0", [sys.executable, "-c", probe], dict(os.environ), str(tmp_path),
                        tmp_path / "run", cpus=cpus)
    handle = executor.start(launch)
    wait_until(lambda: not executor.poll(handle).running, what="the probe to end")
    assert executor.poll(handle).exit_code == 0
    lines = (tmp_path / "run" / "log").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines  # the child inherits it
    return {int(c) for c in lines[0].strip("[]").split(", ")}


def test_a_launch_with_cpus_is_pinned_and_the_server_is_not(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    other: dict[str, set[int]] = {}
    started, release = threading.Event(), threading.Event()

    def another_server_thread() -> None:
        started.set()
        release.wait(10)
        other["affinity"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=another_server_thread)
    thread.start()
    started.wait(10)
    one = max(before)
    try:
        assert _run_affinity_probe(tmp_path, (one,)) == {one}
    finally:
        release.set()
        thread.join(10)
    assert os.sched_getaffinity(0) == before  # the spawning thread got its affinity back
    assert other["affinity"] == before


def test_a_launch_without_cpus_or_with_unusable_ones_is_not_pinned(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    assert _run_affinity_probe(tmp_path / "a", ()) == before
    assert _run_affinity_probe(tmp_path / "b", (max(before) + 4096,)) == before
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_pinning_to_two_cpus(tmp_path: Path) -> None:
    two = tuple(sorted(os.sched_getaffinity(0))[:2])
    assert _run_affinity_probe(tmp_path, two) == set(two)


# -- the sampler against real processes ------------------------------------------------------------

ALLOCATE = """
import os, sys, time
mib, processes = int(sys.argv[1]), int(sys.argv[2])
for _ in range(processes - 1):  # more processes of the task, in its process group
    if os.fork() == 0:
        break
blocks = [bytearray(b"x") * (mib << 20)]  # written, so resident
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def running_task(tmp_path: Path) -> Iterator[Callable[..., tuple[Any, Any, NodeAgent, Any]]]:
    from openarts.config import Settings
    from openarts.core.spec import parse_job
    from openarts.store import jobs as w
    from openarts.store.db import open_db
    from openarts.supervisor.metrics import MetricsSampler

    handles: list[Any] = []
    executor = NodeAgent()

    def start(args: list[str], ready: int) -> tuple[Any, Any, NodeAgent, Any]:
        settings = Settings(data_dir=tmp_path)
        catalog = build_catalog({"flavors": [{"flavor_id": "tiny", "cpu_cores": 1, "memory_gb": 0.0625}]}, gpus=[])
        db = open_db(tmp_path / "openarts.db")
        spec = parse_job({"metadata": {"name": "j"}, "algorithm": {"command": "true"},
                          "spec": {"resource": {"flavor_id": "tiny"}}}, catalog)
        script = tmp_path / "allocate.py"
        script.write_text(ALLOCATE)
        with db.begin() as conn:
            w.create_job(conn, "job", "p", "u", spec, {}, 1000)
            w.transition(conn, "job", Phase.CREATING, Phase.PENDING, at_ms=1000)
            w.open_attempt(conn, "job", 1, [{"task": "worker-0", "idx": 0}], 29500, 1000)
            w.transition(conn, "job", Phase.PENDING, Phase.RUNNING, at_ms=1000)
        run_dir = settings.attempt_dir("job", 1, "worker-0")
        handle = executor.start(TaskLaunch("job", 1, "worker-0", [sys.executable, str(script), *args],
                                           dict(os.environ), str(tmp_path), run_dir))
        handles.append(handle)
        with db.begin() as conn:
            w.mark_attempt_started(conn, "job", 1, 1, [{"task": "worker-0", "pid": handle.pid,
                                                        "pid_start": handle.pid_start}], 1000)
        wait_until(lambda: (run_dir / "log").exists() and (run_dir / "log").read_text().count("ready") == ready,
                   what="the allocation")
        return MetricsSampler(settings, db, catalog, LocalExecutor(), 1.0), db, executor, handle

    yield start
    for h in handles:
        executor.cleanup(h)


def _task(db: Any) -> Any:
    with db.connect() as conn:
        return conn.execute("SELECT oom_ms, oom_reason, exit_code FROM tasks WHERE job_id = 'job'").fetchone()


def test_sampler_kills_a_task_over_its_flavor_and_records_why(running_task: Any) -> None:
    sampler, db, executor, handle = running_task(["100", "1"], ready=1)
    asyncio.run(sampler.sample())
    oom_ms, reason, _ = _task(db)
    assert oom_ms > 0 and reason.startswith("out of memory: ") and reason.endswith("flavor limit 64 MiB")
    assert 100 <= int(reason.split()[3]) < 200  # MiB used
    wait_until(lambda: not executor.poll(handle).running, what="the kill")
    assert executor.poll(handle).exit_code == 137  # SIGKILL, as the shim records it
    log = (handle.run_dir / "log").read_text()
    assert f"[ModelArts Service Log] {reason}: the task's processes are killed." in log
    with db.connect() as conn:
        events = [r[0] for r in conn.execute("SELECT message FROM events WHERE job_id = 'job'")]
    assert any(e.startswith("Task worker-0 ran out of memory (") for e in events)


def test_sampler_adds_up_every_process_of_the_task(running_task: Any) -> None:
    # two processes of 40 MiB each: each under the 64 MiB flavor, together over it
    sampler, db, executor, handle = running_task(["40", "2"], ready=2)
    asyncio.run(sampler.sample())
    oom_ms, reason, _ = _task(db)
    assert oom_ms > 0 and 80 <= int(reason.split()[3]) < 160
    wait_until(lambda: not executor.poll(handle).running, what="the kill")


def test_sampler_leaves_a_task_under_its_flavor_alone(running_task: Any) -> None:
    sampler, db, executor, handle = running_task(["16", "2"], ready=2)
    asyncio.run(sampler.sample())
    assert _task(db) == (0, "", None)
    assert executor.poll(handle).running
