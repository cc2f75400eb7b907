"""The admission planner: priorities, gang, reservation with backfill, preemption, quotas, affinity."""

from __future__ import annotations

import dataclasses

from openarts.scheduler.plan import (
    Affinity,
    Demand,
    NodeFree,
    PendingJob,
    Quota,
    QuotaUse,
    RunningJob,
    can_ever_fit,
    plan,
)

CPU1 = Demand(1000, 1024, 0)


def job(i: str, n: int = 1, prio: int = 1, seq: int = 0, demand: Demand = CPU1, project: str = "p",
        affinity: Affinity | None = None) -> PendingJob:
    return PendingJob(i, "pool", demand, n, prio, seq, project, affinity)


def node(name: str = "n0", cpus: int = 2, gpus: int = 0, **labels: str) -> NodeFree:
    return NodeFree(name, "pool", "127.0.0.1", cpus * 1000, 64 * 1024, list(range(gpus)), labels)


def running(i: str, node_name: str, workers: int = 1, prio: int = 1, preemptible: bool = True, start: int = 0,
            demand: Demand = CPU1) -> RunningJob:
    return RunningJob(i, "pool", prio, preemptible, start, tuple((node_name, demand, ()) for _ in range(workers)))


def test_fifo_fills_capacity_then_waits() -> None:
    p = plan([job("a", seq=1), job("b", seq=2), job("c", seq=3)], [node(cpus=2)])
    assert [x.job_id for x in p.placements] == ["a", "b"]
    assert "insufficient resources" in p.waiting["c"].message


def test_gang_never_partial_and_reservation_blocks_backfill_that_would_delay_the_head() -> None:
    # 4 cores, 2 held by a running job: the 3-worker job waits with a reservation; a 1-core job
    # must not take the cores it waits for
    p = plan([job("big", n=3, seq=1), job("small", seq=2)], [_busy(4, 2)],
             running=[running("r", "n0", workers=2, preemptible=False)])
    assert p.placements == []
    assert "insufficient resources" in p.waiting["big"].message
    assert "queued behind job big" in p.waiting["small"].message


def _busy(cpus: int, used: int) -> NodeFree:
    n = node(cpus=cpus)
    n.cpu_milli -= used * 1000
    return n


def test_backfill_where_it_cannot_delay_the_head() -> None:
    # the head waits for GPUs on n0; a CPU-only job may use CPU the head does not need,
    # and anything on a node the head has no reservation on
    gpu4 = Demand(1000, 1024, 4)
    n0 = node("n0", cpus=8, gpus=4)
    n0.gpus = [0, 1]  # two GPUs held by a running job
    n1 = node("n1", cpus=2)
    held = RunningJob("r", "pool", 1, False, 0, (("n0", Demand(1000, 1024, 2), (2, 3)),))
    p = plan([job("head", demand=gpu4, seq=1), job("cpu-a", seq=2), job("cpu-b", seq=3), job("gpu1", seq=4,
              demand=Demand(1000, 1024, 1))], [n0, n1], running=[held])
    started = {x.job_id for x in p.placements}
    assert started == {"cpu-a", "cpu-b"}
    assert "queued behind job head" in p.waiting["gpu1"].message


def test_priority_orders_before_fifo() -> None:
    p = plan([job("low", seq=1), job("high", prio=3, seq=2)], [node(cpus=1)])
    assert [x.job_id for x in p.placements] == ["high"]


def test_gpus_assigned_by_index() -> None:
    g2 = Demand(1000, 1024, 2)
    p = plan([job("a", demand=g2, seq=1), job("b", demand=g2, seq=2)], [node(cpus=8, gpus=4)])
    assert [w.gpus for x in p.placements for w in x.workers] == [(0, 1), (2, 3)]


def test_preemption_picks_fewest_youngest_preemptible_lower_priority() -> None:
    n0 = _busy(4, 4)
    victims = [running("old", "n0", start=1), running("mid", "n0", start=2), running("young2", "n0", workers=2,
                                                                                      start=3)]
    p = plan([job("urgent", n=2, prio=3, seq=1)], [n0], running=victims)
    assert p.placements == []
    assert [(x.for_job, x.victims) for x in p.preemptions] == [("urgent", ("young2",))]
    # next pass, while young2 stops: nobody else is picked
    stopping = [running("old", "n0", start=1), running("mid", "n0", start=2),
                RunningJob("young2", "pool", 1, True, 3, (("n0", CPU1, ()), ("n0", CPU1, ())), preempting=True)]
    p2 = plan([job("urgent", n=2, prio=3, seq=1), job("filler", seq=2)], [_busy(4, 4)], running=stopping)
    assert p2.preemptions == [] and "preempting" in p2.waiting["urgent"].message
    assert "queued behind job urgent" in p2.waiting["filler"].message


def test_non_preemptible_and_equal_priority_jobs_are_left_alone() -> None:
    p = plan([job("urgent", prio=3, seq=1)], [_busy(1, 1)],
             running=[running("keep", "n0", preemptible=False), running("peer", "n0", prio=3)])
    assert p.preemptions == [] and "insufficient resources" in p.waiting["urgent"].message


def test_quota_waits_without_blocking_others() -> None:
    p = plan([job("a", seq=1, project="q"), job("b", seq=2, project="q"), job("c", seq=3, project="other")],
             [node(cpus=8)], quotas={"q": Quota(running_jobs=1)}, quota_use={"q": QuotaUse()})
    assert {x.job_id for x in p.placements} == {"a", "c"}
    assert p.waiting["b"].message.startswith("project quota")


def test_hyperinstance_groups_share_a_label() -> None:
    nodes = [node("a1", cpus=2, hyperinstance="sn-a"), node("b1", cpus=2, hyperinstance="sn-b"),
             node("b2", cpus=2, hyperinstance="sn-b"), node("a2", cpus=1, hyperinstance="sn-a")]
    p = plan([job("grouped", n=4, affinity=Affinity("hyperinstance", 2), seq=1)], nodes)
    assert len(p.placements) == 1
    placed = [w.node for w in p.placements[0].workers]
    labels = {n.name: n.labels["hyperinstance"] for n in nodes}
    assert labels[placed[0]] == labels[placed[1]] and labels[placed[2]] == labels[placed[3]]


def test_never_satisfiable_affinity_is_detected() -> None:
    nodes = [node("a1", cpus=1, hyperinstance="sn-a"), node("b1", cpus=1, hyperinstance="sn-b")]
    assert not can_ever_fit(job("x", n=2, affinity=Affinity("hyperinstance", 2)), nodes)
    assert can_ever_fit(job("y", n=2), nodes)


def test_spread_puts_each_worker_on_its_own_node_or_waits() -> None:
    """On Ray a node is a worker, as on ModelArts: a job's workers never share a node there."""
    nodes = [node("cpu-only", cpus=4), node("gpu-node", cpus=4, gpus=2)]
    packed = plan([job("a", n=2)], nodes).placements[0]
    assert [w.node for w in packed.workers] == ["cpu-only", "cpu-only"]  # best fit: GPU nodes kept free
    spread = dataclasses.replace(job("a", n=2), spread=True)
    assert [w.node for w in plan([spread], nodes).placements[0].workers] == ["cpu-only", "gpu-node"]
    three = dataclasses.replace(job("b", n=3), spread=True)
    assert plan([three], nodes).placements == [] and not can_ever_fit(three, nodes)
    with_group = dataclasses.replace(job("c", n=2, affinity=Affinity("rack", 2)), spread=True)
    racked = [node("r1a", rack="1"), node("r1b", rack="1"), node("r2a", cpus=8, rack="2")]
    assert sorted(w.node for w in plan([with_group], racked).placements[0].workers) == ["r1a", "r1b"]
