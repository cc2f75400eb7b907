"""The supervisor in process, on the fake executor: races and precedence, pass by pass, no processes.

Each scenario here was a bug (issue 9): capacity handed out twice in one pass, a start failure of a
Pending job looping forever, a lost compare-and-set whose side writes committed anyway.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import orjson
import pytest

from factories import Harness
from openarts.core.errors import JobNotFound
from openarts.core.phases import Phase
from openarts.executors.base import TaskLaunch
from openarts.store import jobs as w
from openarts.supervisor import starting

RETRY = {"fault-tolerance/job-retry-num": "3"}
ONE_CORE_NODES = [{"name": "A", "cpu_cores": 1, "memory_gb": 1}, {"name": "B", "cpu_cores": 1, "memory_gb": 1}]
GPU_NODES = [{"name": "A", "cpu_cores": 8, "memory_gb": 8, "gpus": [0]},
             {"name": "B", "cpu_cores": 8, "memory_gb": 8, "gpus": [0]}]
GPU_FLAVOR = [{"flavor_id": "gpu1", "cpu_cores": 1, "memory_gb": 1, "gpus": 1}]


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(starting, "START_BACKOFF_MS", (0, 0))


def _assert_no_overcommit(h: Harness) -> None:
    held = h.placements()
    per_node = Counter(node for node, gpus, _ in held if not gpus)
    per_gpu = Counter((node, gpus) for node, gpus, _ in held if gpus)
    assert all(n <= 1 for n in per_node.values()), held
    assert all(n <= 1 for n in per_gpu.values()), held


@pytest.mark.parametrize(("nodes", "flavors", "flavor"), [(ONE_CORE_NODES, None, "cpu1"),
                                                          (GPU_NODES, GPU_FLAVOR, "gpu1")])
def test_a_moved_worker_and_a_new_job_never_share_capacity(tmp_path: Path, nodes: list, flavors: list | None,
                                                           flavor: str) -> None:
    h = Harness(tmp_path, nodes, flavors)
    x = h.submit(flavor=flavor, annotations=RETRY)
    h.run(2)
    assert h.job(x).phase == "Running"
    x_node = h.tasks(x)[0].node
    h.executor.lose(x, "worker-0")  # X's worker lost: pod_reschedule to the other node ...
    y = h.submit(flavor=flavor)  # ... while Y waits for the same node
    h.run(1)  # X's attempt closed for pod_reschedule; Y queued
    assert h.job(y).phase == "Pending"
    h.run(1)  # X restarts on the other node; Y must not be placed there too
    _assert_no_overcommit(h)
    h.run(2)
    _assert_no_overcommit(h)
    assert {h.job(x).phase, h.job(y).phase} == {"Running"}
    assert h.tasks(x)[0].node != x_node  # X did move
    assert {h.tasks(x)[0].node, h.tasks(y)[0].node} == {"A", "B"}


def test_two_moves_in_one_pass_do_not_take_the_same_node(tmp_path: Path) -> None:
    nodes = [*ONE_CORE_NODES, {"name": "C", "cpu_cores": 1, "memory_gb": 1}]
    h = Harness(tmp_path, nodes)
    x, z = h.submit(annotations=RETRY), h.submit(annotations=RETRY)
    h.run(2)
    assert {h.tasks(x)[0].node, h.tasks(z)[0].node} == {"A", "B"}
    h.executor.lose(x, "worker-0")
    h.executor.lose(z, "worker-0")
    h.run(1)  # both closed with pod_reschedule (C free for either)
    h.run(1)  # both restart in the same pass: only one may take C
    _assert_no_overcommit(h)
    assert h.job(x).phase == h.job(z).phase == "Running"
    assert sorted(t.node for j in (x, z) for t in h.tasks(j)) in (["A", "C"], ["B", "C"])


def test_a_start_failure_without_a_retry_budget_fails_the_job_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, ONE_CORE_NODES)
    h.executor.start_errors = ["cannot spawn: no such file"]
    j = h.submit()
    h.run(3)
    row = h.job(j)
    assert (row.phase, row.secondary_phase) == ("Failed", "Failed")
    assert "start failed: cannot spawn: no such file" in row.message
    assert "job-retry-num" in row.message
    assert h.executor.tasks == {}
    assert row.attempt == 0  # no attempt left half-open
    assert sum("start failed" in e for e in h.events(j)) == 1


def test_start_failures_are_retried_within_the_budget_then_fail(tmp_path: Path) -> None:
    h = Harness(tmp_path, ONE_CORE_NODES)
    h.executor.start_errors = ["disk full"] * 3
    j = h.submit(annotations={"fault-tolerance/job-retry-num": "2"})
    h.run(6)
    row = h.job(j)
    assert row.phase == "Failed"
    assert row.retries_used == 2
    assert "retry budget is exhausted (2 of 2" in row.message
    assert sum("Retrying from the queue" in e for e in h.events(j)) == 2


def test_a_start_failure_then_success_runs_the_job(tmp_path: Path) -> None:
    h = Harness(tmp_path, ONE_CORE_NODES)
    h.executor.start_errors = ["transient"]
    j = h.submit(annotations=RETRY)
    h.run(3)
    row = h.job(j)
    assert row.phase == "Running"
    assert (row.retries_used, row.attempt) == (1, 1)


def test_a_failed_restart_in_place_is_requeued_then_runs(tmp_path: Path) -> None:
    h = Harness(tmp_path, ONE_CORE_NODES)
    j = h.submit(annotations={**RETRY, "fault-tolerance/job-unconditional-retry": "true"})
    h.run(2)
    h.executor.exit(j, "worker-0", 1)  # proc_restart next ...
    h.executor.start_errors = ["cannot spawn"]  # ... which cannot start
    h.run(2)
    assert h.job(j).phase == "Pending"
    h.run(2)
    row = h.job(j)
    assert row.phase == "Running"
    assert row.retries_used == 2  # the exit and the failed start


def test_a_lost_compare_and_set_rolls_back_the_attempt_it_started(tmp_path: Path) -> None:
    h = Harness(tmp_path, ONE_CORE_NODES)
    j = h.submit()
    h.run(1)
    assert h.job(j).phase == "Pending"
    real_start = h.executor.start

    async def start_while_job_moves(launch: TaskLaunch):  # type: ignore[no-untyped-def]
        with h.db.begin() as conn:  # someone else moves the job while its workers spawn
            w.transition(conn, j, Phase.PENDING, Phase.TERMINATED, at_ms=w.now_ms())
        return await real_start(launch)

    h.executor.start = start_while_job_moves  # type: ignore[method-assign]
    h.run(1)
    row = h.job(j)
    assert row.phase == "Terminated"
    with h.db.connect() as conn:
        started = conn.execute("SELECT started FROM attempts WHERE job_id = ?", (j,)).fetchall()
        counts = conn.execute("SELECT count FROM node_counts WHERE job_id = ?", (j,)).fetchall()
    assert started == []  # mark_attempt_started rolled back, and the attempt it opened dropped
    assert counts == []
    assert not any("Job started" in e for e in h.events(j))
    assert h.executor.running() == []  # what it spawned does not run on unaccounted
    assert row.attempt == 0


def test_terminate_wins_over_a_pending_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path, ONE_CORE_NODES)
    j = h.submit(annotations={**RETRY, "fault-tolerance/job-unconditional-retry": "true"})
    h.run(2)
    h.executor.exit(j, "worker-0", 1)
    h.run(1)  # attempt closed for proc_restart
    with h.db.begin() as conn:
        w.request_terminate(conn, j, w.now_ms())
    h.run(3)
    assert h.job(j).phase == "Terminated"
    assert h.job(j).attempt == 1  # never restarted


def test_terminate_wins_over_preemption(tmp_path: Path) -> None:
    h = Harness(tmp_path, [ONE_CORE_NODES[0]])
    low = h.submit(priority=1, preemptible=True)
    h.run(2)
    high = h.submit(priority=3)
    h.run(2)  # queued, then the planner asks low to be preempted
    assert h.job(low).preempt_requested
    with h.db.begin() as conn:
        w.request_terminate(conn, low, w.now_ms())
    h.run(4)
    assert h.job(low).phase == "Terminated"  # not requeued
    assert h.job(high).phase == "Running"


def test_a_preempted_job_is_requeued_and_resumes(tmp_path: Path) -> None:
    h = Harness(tmp_path, [ONE_CORE_NODES[0]])
    low = h.submit(priority=1, preemptible=True)
    h.run(2)
    high = h.submit(priority=3, command="sleep 1")
    h.run(6)  # queued; low asked to stop; low killed; low requeued; high placed
    assert (h.job(low).phase, h.job(high).phase) == ("Pending", "Running")
    _assert_no_overcommit(h)
    h.executor.exit(high, "worker-0", 0)
    h.run(3)
    assert (h.job(low).phase, h.job(high).phase) == ("Running", "Completed")
    assert h.job(low).retries_used == 0  # a preemption uses no retry budget


def test_bookkeeping_is_dropped_when_jobs_end(tmp_path: Path) -> None:
    h = Harness(tmp_path, [ONE_CORE_NODES[0]])
    jobs = [h.submit() for _ in range(3)]
    h.run(2)
    for j in jobs:
        with h.db.begin() as conn:
            w.request_terminate(conn, j, w.now_ms())
    h.run(4)
    assert all(h.job(j).phase == "Terminated" for j in jobs)
    assert not h.sup._specs and not h.sup._waiting_reason and not h.sup._termed and not h.sup._retry_at


def test_a_failed_start_waits_for_its_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(starting, "START_BACKOFF_MS", (60_000, 60_000))
    h = Harness(tmp_path, ONE_CORE_NODES)
    h.executor.start_errors = ["transient"]
    j = h.submit(annotations=RETRY)
    h.run(4)
    assert h.job(j).phase == "Pending"
    assert h.executor.tasks == {}  # not tried again within the backoff
    later = w.now_ms() + 61_000
    monkeypatch.setattr(w, "now_ms", lambda: later)
    h.run(1)
    assert h.job(j).phase == "Running"


def test_a_start_failure_does_not_move_the_recovery_ladder(tmp_path: Path) -> None:
    h = Harness(tmp_path, ONE_CORE_NODES)
    h.executor.start_errors = ["transient"]
    j = h.submit(annotations={**RETRY, "fault-tolerance/job-unconditional-retry": "true"})
    h.run(3)
    assert h.job(j).phase == "Running"
    h.executor.exit(j, "worker-0", 1)
    h.run(1)
    with h.db.connect() as conn:
        tier = conn.execute("SELECT end_recover FROM attempts WHERE job_id = ? ORDER BY seq DESC", (j,)).fetchone()
    assert tier == ("proc_restart",)  # the top of the ladder, not below job_reschedule


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_pinned_cores_stay_distinct_across_restarts(tmp_path: Path) -> None:
    h = Harness(tmp_path, [{"name": "A", "cpu_cores": 2, "memory_gb": 2}])
    retry = {**RETRY, "fault-tolerance/job-unconditional-retry": "true"}
    x, y = h.submit(annotations=retry), h.submit(annotations=retry)
    h.run(2)
    before = {j: h.tasks(j)[0].cpus for j in (x, y)}
    assert sorted(before.values()) == sorted(str(c) for c in sorted(os.sched_getaffinity(0))[:2])
    h.executor.exit(x, "worker-0", 1)
    h.run(2)  # x restarts in place on the core it had
    assert h.job(x).attempt == 2
    assert {j: h.tasks(j)[0].cpus for j in (x, y)} == before
    launches = [t.launch.cpus for t in h.executor.running()]
    assert sorted(launches) == sorted((int(c),) for c in before.values())


def test_an_ended_jobs_document_is_kept_until_its_row_changes(tmp_path: Path) -> None:
    from openarts.service.jobs import JobService

    h = Harness(tmp_path, ONE_CORE_NODES)
    svc = JobService(h.settings, h.db, h.catalog, lambda _: None)
    body = {"kind": "job", "metadata": {"name": "kept"}, "algorithm": {"command": "true"},
            "spec": {"resource": {"flavor_id": "cpu1", "node_count": 1}}}
    j = asyncio.run(svc.create("p", "u", body))["metadata"]["id"]
    h.run(2)
    running = svc.get_json("p", j)
    assert svc.get_json("p", j) is not running  # a running job's is rendered every time (its duration)
    h.executor.exit(j, "worker-0", 0)
    h.run(1)
    first = svc.get_json("p", j)
    assert orjson.loads(first)["status"]["phase"] == "Completed" and svc.get_json("p", j) is first
    svc.update("p", j, {"description": "changed"})
    changed = svc.get_json("p", j)
    assert changed is not first and orjson.loads(changed)["metadata"]["description"] == "changed"
    svc.delete("p", [j])
    with pytest.raises(JobNotFound):
        svc.get_json("p", j)


def test_adopting_at_start_drops_reservations_no_open_attempt_owns(tmp_path: Path) -> None:
    import asyncio

    h = Harness(tmp_path, ONE_CORE_NODES)
    j = h.submit()
    h.run(2)
    assert (j, 1) in h.executor.reserved
    h.executor.reserved[("job-left-by-a-dead-server", 4)] = ["n1"]
    h.executor.reserved[(j, 0)] = ["n1"]  # an older attempt of a live job
    asyncio.run(h.sup.adopt())
    assert set(h.executor.reserved) == {(j, 1)}
